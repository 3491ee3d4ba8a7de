"""The scoring service: catalogue and cache of production models, HTTP API, packaging, serving."""
