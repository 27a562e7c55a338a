"""The real torch.distributed implementation (the only package that imports torch)."""
