"""The command line as a user runs it: exit codes, messages, files written."""

import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import yaml

from extension.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHOOT = ROOT / "examples" / "shoot.yaml"
SECRET = ROOT / "examples" / "quay-credentials-v1.yaml"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_validate_docs_example(capsys):
    code, out, err = run(capsys, "validate", SHOOT, "--secret", SECRET)
    assert (code, out) == (0, "")
    assert "valid (4 caches: docker.io, ghcr.io, quay.io, my-registry.io:5000)" in err


def test_validate_without_the_secret_names_what_is_missing(capsys):
    code, out, _ = run(capsys, "validate", SHOOT)
    assert code == 1
    assert out.splitlines() == [
        'spec.extensions[0].providerConfig.caches[2].secretReferenceName: Invalid value: "quay-credentials": failed '
        'to get secret garden-dev/quay-credentials-v1 for secretReferenceName quay-credentials: secrets '
        '"quay-credentials-v1" not found']


def test_validate_invalid_one_error_per_line_path_first(capsys, tmp_path):
    doc = yaml.safe_load(SHOOT.read_text())
    caches = doc["spec"]["extensions"][0]["providerConfig"]["caches"]
    caches[0]["upstream"] = "https://docker.io"
    caches[1]["volume"] = {"size": "0"}
    caches.append({"upstream": "ghcr.io"})
    doc["spec"]["provider"]["workers"][0]["cri"]["name"] = "docker"
    code, out, _ = run(capsys, "validate", write(tmp_path, "s.yaml", yaml.safe_dump(doc)), "--secret", SECRET)
    assert code == 1
    paths = [line.split(":")[0] for line in out.splitlines()]
    assert paths == ["spec.provider.workers[0].cri.name", "spec.extensions[0].providerConfig.caches[0].upstream",
                     "spec.extensions[0].providerConfig.caches[1].volume.size",
                     "spec.extensions[0].providerConfig.caches[4].upstream"]


def test_validate_update_with_old(capsys, tmp_path):
    doc = yaml.safe_load(SHOOT.read_text())
    doc["spec"]["extensions"][0]["providerConfig"]["caches"][0]["volume"]["size"] = "200Gi"
    code, out, _ = run(capsys, "validate", write(tmp_path, "new.yaml", yaml.safe_dump(doc)), "--old", SHOOT,
                       "--secret", SECRET)
    assert code == 1
    assert out == 'spec.extensions[0].providerConfig.caches[0].volume.size: Invalid value: "200Gi": field is immutable\n'


def test_validate_input_errors_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "validate", tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml: no such file" in err
    code, _, err = run(capsys, "validate", write(tmp_path, "bad.yaml", "a: [1, 2\nb: c"))
    assert code == 2 and "bad.yaml: not valid YAML at line" in err
    code, _, err = run(capsys, "validate", write(tmp_path, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\n"))
    assert code == 2 and 'expected a core.gardener.cloud/v1beta1 Shoot, found apiVersion "v1", kind "ConfigMap"' in err
    code, _, err = run(capsys, "validate", SHOOT, "--secret", write(tmp_path, "s.yaml",
                       "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: {password: '!!!'}\n"))
    assert code == 2 and "data[password] is not valid base64" in err and "!!!" not in err


def test_shoot_and_secret_in_one_file(capsys, tmp_path):
    combined = write(tmp_path, "all.yaml", SHOOT.read_text() + "\n---\n" + SECRET.read_text())
    assert run(capsys, "validate", combined)[0] == 0


def test_render_writes_objects_hosts_and_ca(capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "render", SHOOT, "--secret", SECRET, "--output", out,
                            "--endpoint", "docker.io=https://10.4.0.12:5000")
    assert code == 0, err
    objects = [yaml.safe_load(p.read_text()) for p in sorted((out / "shoot").glob("*.yaml"))]
    assert [o["kind"] for o in objects].count("StatefulSet") == 4
    assert sorted(p.name for p in (out / "nodes").iterdir()) == [
        "ca-bundle.pem", "docker.io", "ghcr.io", "my-registry.io:5000", "quay.io"]
    docker = tomllib.loads((out / "nodes" / "docker.io" / "hosts.toml").read_text())
    assert docker == {"server": "https://registry-1.docker.io",
                      "host": {"https://10.4.0.12:5000": {"capabilities": ["pull", "resolve"],
                                                         "ca": ["/etc/containerd/certs.d/ca-bundle.pem"],
                                                         "dial_timeout": "100ms"}}}
    ghcr = (out / "nodes" / "ghcr.io" / "hosts.toml").read_text()
    assert '[host."https://registry-ghcr-io.kube-system.svc.cluster.local:5000"]' in ghcr
    assert "note: ghcr.io: no --endpoint given, hosts.toml points at" in err and "--endpoint ghcr.io=" in err
    assert "note: docker.io" not in err
    assert "not-a-real-password" not in err + stdout
    status = yaml.safe_load((out / "provider-status.yaml").read_text())
    assert status["caches"][0] == {"upstream": "docker.io", "endpoint": "https://10.4.0.12:5000",
                                   "remoteURL": "https://registry-1.docker.io"}
    # a second render replaces the first one's files
    assert run(capsys, "render", SHOOT, "--secret", SECRET, "--output", out)[0] == 0
    assert len(list((out / "shoot").glob("*.yaml"))) == len(objects)


def test_render_dial_timeout(capsys, tmp_path):
    out = tmp_path / "out"
    assert run(capsys, "render", SHOOT, "--secret", SECRET, "-o", out, "--dial-timeout", "1s")[0] == 0
    assert 'dial_timeout = "1s"' in (out / "nodes" / "docker.io" / "hosts.toml").read_text()
    assert run(capsys, "render", SHOOT, "--secret", SECRET, "-o", out, "--dial-timeout", "0")[0] == 0
    assert "dial_timeout" not in (out / "nodes" / "docker.io" / "hosts.toml").read_text()
    code, _, err = run(capsys, "render", SHOOT, "--secret", SECRET, "-o", out, "--dial-timeout", "soon")
    assert code == 2 and "--dial-timeout" in err and "not a Go duration" in err


def test_render_invalid_renders_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "render", SHOOT, "--output", out)
    assert code == 1 and "secretReferenceName" in stdout
    assert not out.exists()


def test_render_bad_endpoint(capsys, tmp_path):
    code, _, err = run(capsys, "render", SHOOT, "--secret", SECRET, "-o", tmp_path, "--endpoint", "docker.io")
    assert code == 2 and "expected UPSTREAM=URL" in err
    code, _, err = run(capsys, "render", SHOOT, "--secret", SECRET, "-o", tmp_path, "--endpoint", "x.io=https://1.2.3.4:5000")
    assert code == 2 and "x.io, which no cache of the Shoot has" in err


def test_runs_as_a_process():
    # the console script installed with this interpreter (not whichever registry-cache comes first on PATH)
    script = shutil.which("registry-cache", path=sysconfig.get_path("scripts"))
    command = [script] if script else [sys.executable, "-m", "extension.cli"]
    done = subprocess.run([*command, "validate", str(SHOOT), "--secret", str(SECRET)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*command, "validate", "/nonexistent.yaml"], capture_output=True, text=True)
    assert done.returncode == 2 and "no such file" in done.stderr


def test_a_shoot_without_the_extension_is_the_same_to_validate_and_render(tmp_path, capsys):
    shoot = yaml.safe_load(SHOOT.read_text())
    shoot["spec"]["extensions"] = [{"type": "shoot-dns-service"}]
    path = write(tmp_path, "plain.yaml", yaml.safe_dump(shoot))
    validated = run(capsys, "validate", path)
    rendered = run(capsys, "render", path, "-o", tmp_path / "out")
    assert validated[:2] == rendered[:2] == (0, "")
    assert validated[2].replace("validate", "X") == rendered[2].replace("render", "X")
    assert "enables neither the registry-cache nor the registry-mirror extension" in rendered[2]
    assert not (tmp_path / "out").exists()


def test_every_exit_code_comes_from_one_table(capsys):
    from extension.cli.main import ExitCode
    assert [int(c) for c in ExitCode] == [0, 1, 2, 130]
    assert run(capsys, "validate", "/nonexistent.yaml")[0] == ExitCode.USAGE
    assert run(capsys, "credentials", "rotate", "--shoot", "nope", "--reference", "r", "--username", "u",
               "--password-stdin")[0] == ExitCode.USAGE


def test_run_node_auth_needs_standalone(capsys):
    code, _, err = run(capsys, "run", "--node-auth", "--kubeconfig", "/nonexistent")
    assert code == 2 and "--node-auth needs --standalone" in err


def test_render_writes_secrets_0600_and_removes_only_its_own_files(capsys, tmp_path):
    """The config Secret holds the upstream's password and the TLS Secrets private keys: never world-readable.
    A second render removes what the first one wrote, and nothing else in DIR."""
    import stat
    out = tmp_path / "out"
    (out / "shoot").mkdir(parents=True)
    (out / "nodes" / "my.io").mkdir(parents=True)
    mine = [out / "shoot" / "mine.yaml", out / "nodes" / "my.io" / "hosts.toml", out / "notes.txt"]
    for path in mine:
        path.write_text("my own\n")
    assert run(capsys, "render", SHOOT, "--secret", SECRET, "--output", out)[0] == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (out / "shoot").glob("*-secret-*.yaml")}
    assert len(modes) == 8 and set(modes.values()) == {0o600}, modes  # 4 config, 4 TLS Secrets
    assert {stat.S_IMODE(p.stat().st_mode) for p in (out / "shoot").glob("*-statefulset-*.yaml")} == {0o644}
    first = sorted(p.name for p in (out / "shoot").glob("*.yaml"))
    # the second render's Secrets differ (fresh certificates): the first one's go, mine stay
    doc = yaml.safe_load(SHOOT.read_text())
    doc["spec"]["extensions"][0]["providerConfig"]["caches"].pop(0)  # docker.io goes
    code, _, err = run(capsys, "render", write(tmp_path, "s.yaml", yaml.safe_dump(doc)), "--secret", SECRET,
                       "--output", out)
    assert code == 0, err
    assert all(p.read_text() == "my own\n" for p in mine)
    second = sorted(p.name for p in (out / "shoot").glob("*.yaml"))
    assert "mine.yaml" in second and not [n for n in second if "docker-io" in n] and second != first
    assert not (out / "nodes" / "docker.io").exists()
    assert sorted(p.name for p in (out / "nodes").iterdir()) == ["ca-bundle.pem", "ghcr.io", "my-registry.io:5000",
                                                               "my.io", "quay.io"]
    # a written file that was world-readable before is 0600 now too
    secret_file = next((out / "shoot").glob("*-secret-*.yaml"))
    secret_file.chmod(0o644)
    assert run(capsys, "render", SHOOT, "--secret", SECRET, "--output", out)[0] == 0
    assert {stat.S_IMODE(p.stat().st_mode) for p in (out / "shoot").glob("*-secret-*.yaml")} == {0o600}


def test_bad_input_is_a_short_clear_error_exit_2(capsys, tmp_path):
    """Once tracebacks (exit 1), or a 52 MB error line for a 700-byte alias bomb."""
    code, out, err = run(capsys, "render", SHOOT, "--secret", SECRET, "-o", tmp_path / "o",
                         "--endpoint", "docker.io=https://[::1")
    assert code == 2 and 'error: --endpoint "docker.io=https://[::1": expected an http(s)://HOST[:PORT] URL' in err
    deep = write(tmp_path, "deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")
    code, out, err = run(capsys, "validate", deep)
    assert code == 2 and err == f"error: {deep}: cannot be used: the YAML is nested more than 100 levels deep\n"
    doc = yaml.safe_load(SHOOT.read_text())
    doc["metadata"] = [1]
    code, out, err = run(capsys, "validate", write(tmp_path, "m.yaml", yaml.safe_dump(doc)), "--secret", SECRET)
    assert code == 2 and "the Shoot's metadata must be a mapping, found [1]" in err
    lines = ["x0: &x0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, 8)]
    bomb_text = SHOOT.read_text().replace("name: containerd", "name: *x7", 1)
    assert "*x7" in bomb_text
    bomb = write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n" + bomb_text)
    assert len(bomb.read_text()) < 5000
    code, out, err = run(capsys, "validate", bomb, "--secret", SECRET)
    assert code == 2 and len(err) < 300 and "excessive aliasing" in err, err[:300]
    for args in (["validate", deep], ["render", deep, "-o", tmp_path / "o"]):
        assert "Traceback" not in subprocess.run([sys.executable, "-m", "extension.cli", *map(str, args)],
                                                 capture_output=True, text=True, timeout=60).stderr


def test_a_long_invalid_value_is_cut_short(capsys, tmp_path):
    doc = yaml.safe_load(SHOOT.read_text())
    doc["spec"]["provider"]["workers"][0]["cri"]["name"] = [["x" * 100] * 100] * 100  # 1 MB, no aliases
    code, out, _ = run(capsys, "validate", write(tmp_path, "s.yaml", yaml.safe_dump(doc)), "--secret", SECRET)
    assert code == 1
    [line] = out.splitlines()
    assert line.startswith('spec.provider.workers[0].cri.name: Invalid value: [["xxx') and len(line) < 1200


def test_local_up_with_the_node_by_default_and_the_fallback(capsys, monkeypatch, tmp_path):
    """local-up runs the one-node cluster with the product installed by its chart unless --no-node or
    --host-processes; it installs the node's Debian packages where it can; where the node still cannot run it
    says what is missing and falls back to the control plane only (and the docs example instead of the node's);
    where the image cannot be built, to the controller and node agent as processes."""
    from extension.local import images, node, up

    calls = []
    monkeypatch.setattr(up, "run", lambda workdir, manifests, wait, timeout, node, install, nodes: calls.append(
        (manifests, wait, timeout, node, install)) or 0)
    monkeypatch.setattr(node, "node_prerequisites", lambda: [])
    monkeypatch.setattr(images, "image_unavailable", lambda: None)
    assert main(["local-up", "--no-wait"]) == 0
    assert calls.pop() == (None, False, 180.0, True, "chart")
    assert main(["local-up", "--no-wait", "--host-processes"]) == 0
    assert calls.pop() == (None, False, 180.0, True, "processes")
    assert main(["local-up", "--no-node", "--timeout", "60"]) == 0
    assert calls.pop()[:4] == (None, True, 60.0, False)
    assert "Falling back" not in capsys.readouterr().err

    monkeypatch.setattr(images, "image_unavailable", lambda: "no buildah")
    assert main(["local-up", "--no-wait"]) == 0
    assert calls.pop()[3:] == (True, "processes")
    assert "The image cannot be built here (no buildah)" in capsys.readouterr().err

    installed = []
    missing = [["runc", "kubectl"]]
    monkeypatch.setattr(node, "node_prerequisites", lambda: missing[-1])
    monkeypatch.setattr(node, "install_node_packages", lambda: installed.append(1) or False)
    assert main(["local-up", "--no-wait"]) == 0
    assert installed and calls.pop()[3] is False
    err = capsys.readouterr().err
    assert "missing: runc; kubectl" in err and "Falling back to the control plane only (--no-node)" in err
    # the packages it installed were what was missing: the node runs
    monkeypatch.setattr(node, "install_node_packages", lambda: missing.append([]) or True)
    assert main(["local-up", "--no-wait"]) == 0
    assert calls.pop()[3] is True
    assert up.default_manifests(True) == [up.EXAMPLES / "local-shoot.yaml"]
    assert [p.name for p in up.default_manifests(False)] == ["quay-credentials-v1.yaml", "shoot.yaml"]
    assert all(p.is_file() for p in up.default_manifests(True) + up.default_manifests(False))

    assert main(["local-up", str(tmp_path / "missing.yaml")]) == 2
