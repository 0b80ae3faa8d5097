"""Sandboxes, run folders, resource limits and the zygote that forks kernels."""
