// ping-responder.click: answers ARP for $IP and ICMP echo on vif 0; drops everything else.
// The usual "is the micro-VNF up" probe: ping $IP from the bridge the vif is on.
define($IP 198.18.3.10, $MAC 00:16:3e:00:00:10);

in  :: FromDevice(0);
out :: ToDevice(0);

cls :: Classifier(12/0806 20/0001,   // ARP request
                  12/0800,           // IPv4
                  -);                // anything else

in -> cls;
cls[0] -> ARPResponder($IP $MAC) -> out;
cls[1] -> CheckIPHeader(14) -> ICMPPingResponder -> EtherMirror -> out;
cls[2] -> Discard;
