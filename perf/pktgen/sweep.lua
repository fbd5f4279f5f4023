-- UNVERIFIED (pktgen-dpdk 23.x Lua API; see perf/pktgen/README.md).
-- Rate sweep: port 0 sends the range configured by nat-1k.pkt or nat-1m.pkt at each rate for `secs`
-- seconds; port 1 counts what natgw delivered. Prints offered and received Mpps and loss per step.
-- Run inside pktgen after loading a .pkt file:   load perf/pktgen/sweep.lua   (or: pktgen ... -f sweep.lua)
package.path = package.path .. ";?.lua;test/?.lua;app/?.lua;"
require "Pktgen"

local secs = 10
local rates = { 10, 20, 30, 40, 50, 60, 70, 80, 90, 100 }   -- percent of line rate

pktgen.stop("all")
for _, r in ipairs(rates) do
  pktgen.clr()
  pktgen.set("0", "rate", r)
  pktgen.start("0")
  pktgen.delay(secs * 1000)
  pktgen.stop("0")
  pktgen.delay(500)  -- drain
  local s = pktgen.portStats("all", "port")
  local tx, rx = s[0].opackets, s[1].ipackets
  local loss = tx > 0 and (1 - rx / tx) * 100 or 0
  printf("rate %3d%%  offered %8.3f Mpps  received %8.3f Mpps  loss %7.4f%%\n",
         r, tx / secs / 1e6, rx / secs / 1e6, loss)
end
