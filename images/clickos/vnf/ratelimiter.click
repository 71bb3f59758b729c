// ratelimiter.click: shapes vif 0 -> vif 1 to $RATE (bytes/s) through a bounded queue; the
// reverse direction passes unchanged. Drops when the queue overflows.
define($RATE 1250000);  // 10 Mbit/s

FromDevice(0) -> Queue(1000) -> BandwidthRatedUnqueue($RATE) -> ToDevice(1);
FromDevice(1) -> ToDevice(0);
