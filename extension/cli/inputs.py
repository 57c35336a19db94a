"""Reading Shoot and Secret manifests from YAML files (the CLI's input), with errors that name the file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from api import yamldoc
from api.field import brief
from api.secrets import SecretData, SecretFormatError, secret_from_manifest
from api.shoot import SHOOT_API_VERSION, SHOOT_KIND
from extension.cli.errors import InputError


@dataclass
class Inputs:
    shoot: dict[str, Any]
    secrets: list[SecretData] = field(default_factory=list)

    def secret_getter(self):
        """``(namespace, name) -> SecretData | None``; a Secret without a namespace matches any."""
        def get(namespace: str, name: str) -> SecretData | None:
            for secret in self.secrets:
                if secret.name == name and (not secret.namespace or not namespace or secret.namespace == namespace):
                    return secret
            return None
        return get


def load_documents(path: str | Path) -> list[Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, expected a YAML file") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file (expected UTF-8 YAML)") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot be read: {exc.strerror}") from None
    try:
        docs = yamldoc.load_all(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "could not be parsed"
        raise InputError(f"{p}: not valid YAML{where}: {str(problem)[:200]}") from None
    except yamldoc.YAMLLimitError as exc:
        raise InputError(f"{p}: cannot be used: the YAML is {exc}") from None
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == "List" and isinstance(d.get("items"), list):
            docs = [x for x in docs if x is not d] + d["items"]  # kubectl get -o yaml of several objects
    return docs


def _describe(doc: Any) -> str:
    if isinstance(doc, dict):
        return f"apiVersion {brief(doc.get('apiVersion'), 100)}, kind {brief(doc.get('kind'), 100)}"
    return f"a {type(doc).__name__}"


def _check_metadata(obj: dict[str, Any], source: str | Path, what: str) -> None:
    """``metadata`` a mapping, its name and namespace strings: the code behind reads them as such."""
    meta = obj.get("metadata")
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise InputError(f"{source}: the {what}'s metadata must be a mapping, found {brief(meta, 100)}")
    for key in ("name", "namespace"):
        if key in meta and not isinstance(meta[key], str):
            raise InputError(f"{source}: the {what}'s metadata.{key} must be a string, found {brief(meta[key], 100)}")


def load_inputs(shoot_file: str | Path, secret_files: Sequence[str | Path] = ()) -> Inputs:
    """One Shoot from ``shoot_file`` (Secrets in the same file are used too), Secrets from the others."""
    docs = load_documents(shoot_file)
    shoots = [d for d in docs if isinstance(d, dict) and d.get("kind") == SHOOT_KIND]
    if not shoots:
        found = "; ".join(_describe(d) for d in docs) or "no documents"
        raise InputError(f"{shoot_file}: expected a {SHOOT_API_VERSION} Shoot, found {found}")
    if len(shoots) > 1:
        raise InputError(f"{shoot_file}: expected one Shoot, found {len(shoots)}")
    shoot = shoots[0]
    if shoot.get("apiVersion") != SHOOT_API_VERSION:
        raise InputError(f"{shoot_file}: a Shoot must have apiVersion {SHOOT_API_VERSION}, "
                         f"found {brief(shoot.get('apiVersion'), 100)}")
    if not isinstance(shoot.get("spec"), dict):
        raise InputError(f"{shoot_file}: the Shoot has no spec")
    _check_metadata(shoot, shoot_file, "Shoot")
    secrets = []
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == "Secret":
            secrets.append(_secret(d, shoot_file))
    for f in secret_files:
        in_file = [d for d in load_documents(f) if isinstance(d, dict) and d.get("kind") == "Secret"]
        if not in_file:
            raise InputError(f"{f}: expected a v1 Secret")
        secrets += [_secret(d, f) for d in in_file]
    return Inputs(shoot, secrets)


def load_old_shoot(path: str | Path) -> dict[str, Any]:
    return load_inputs(path).shoot


def _secret(doc: dict[str, Any], source: str | Path) -> SecretData:
    _check_metadata(doc, source, "Secret")
    try:
        return secret_from_manifest(doc, str(source))
    except SecretFormatError as exc:
        raise InputError(str(exc)) from None
