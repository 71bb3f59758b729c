"""The analyzer: capture -> TCP streams -> HTTP / Nomad RPC messages -> per-instance timelines.

Modules, one job each: pcap (reading captures), tcp (reassembly), http (HTTP/1.1),
nomad_rpc (yamux + msgpack-rpc on 4647), nomad_phases (events and phases), analyze (the
pipeline and timelines.jsonl).
"""

from vimprof.analyzer.analyze import AnalysisResult, analyze_capture, analyze_run

__all__ = ["AnalysisResult", "analyze_capture", "analyze_run"]
