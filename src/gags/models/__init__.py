"""The two model interfaces (segmenter, image-text encoder), their real adapters and the registry."""
