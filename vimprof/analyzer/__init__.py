"""The analyzer: captures -> TCP streams -> HTTP / Nomad RPC / AMQP -> per-instance timelines.

Modules, one job each: pcap (reading and merging captures), tcp (reassembly), tls (TLS
detection), http (HTTP/1.1), nomad_rpc (yamux + msgpack-rpc on 4647), amqp (AMQP 0-9-1),
oslo (oslo.messaging envelopes, Nova objects), nomad_phases / nova_phases (events and phases),
enrich (hooks, VIM events, cross-checks), analyze (the pipeline and timelines.jsonl).
"""

from vimprof.analyzer.analyze import AnalysisResult, analyze_capture, analyze_run

__all__ = ["AnalysisResult", "analyze_capture", "analyze_run"]
