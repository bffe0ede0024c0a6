"""The recurrent network itself, in plain torch: the cells, the window loop with its hand-written
BPTT, the fused backend, sampling and the monitor's diagnostics. Nothing here imports Lightning."""
