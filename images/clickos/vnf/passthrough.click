// passthrough.click: the smallest micro-VNF, a two-port L2 wire (ClickOS, Martins et al. 2014).
// vif 0 -> vif 1 and back; every frame is forwarded unchanged.
// Install into a running ClickOS domain: clickos-install.sh <domain> passthrough.click
FromDevice(0) -> ToDevice(1);
FromDevice(1) -> ToDevice(0);
