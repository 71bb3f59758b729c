"""vimprof: VIM instantiation-latency profiler for micro-VNFs."""

__version__ = "0.1.0"
