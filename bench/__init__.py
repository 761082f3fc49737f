"""Parlor's benchmarks: what a person feels (token speed, first-token latency, many chats at
once, page speed, memory), side by side with the limit (llama-cpp-python in-process) and the
alternative (llama-cpp-python's own server). Run with `uv run python -m bench`."""
