"""Stage 3 of the analyzer: reassembled TCP byte streams to VIM protocol messages.

One decoder object per connection (a tcp.StreamHandler: data, gap, close), chosen by the
server's port (ports.py): http.py (HTTP/1.1 requests and responses, `HttpMessage`),
nomad_rpc.py (Nomad's yamux + msgpack-rpc, `RpcMessage`), amqp.py (AMQP 0-9-1 publishes
and deliveries, `AmqpMessage`). Helpers: oslo.py (oslo.messaging envelopes and Nova objects
in AMQP bodies), tls.py (TLS is detected and reported, never parsed), timemap.py (which
packet carried a byte of the stream: message times). Messages go to callbacks as they
complete; nothing here knows about instances or phases.
"""
