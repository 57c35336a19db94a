"""The ``registry.extensions.gardener.cloud`` API: models, defaults, validation, JSON Schema. No I/O."""
