// firewall.click: a stateless L3/L4 filter between vif 0 (outside) and vif 1 (inside).
// Lets ARP through both ways; from outside only ICMP echo and TCP 80/443 to $NET reach inside.
define($NET 198.18.3.0/24);

out_in  :: FromDevice(0);
out_out :: ToDevice(0);
in_in   :: FromDevice(1);
in_out  :: ToDevice(1);

cls :: Classifier(12/0806, 12/0800, -);
out_in -> cls;
cls[0] -> in_out;                                    // ARP
cls[1] -> Strip(14) -> CheckIPHeader
       -> filter :: IPFilter(allow icmp type echo and dst net $NET,
                             allow tcp and dst net $NET and (dst port 80 or dst port 443),
                             deny all)
       -> Unstrip(14) -> in_out;
cls[2] -> Discard;

in_in -> out_out;                                    // inside to outside: unfiltered
