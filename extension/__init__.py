"""The registry-cache operator: decoding, reference resolution, rendering, delivery, handlers, CLI."""
