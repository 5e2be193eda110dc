"""Where the time goes: pass rates, FLOP bound, the GPU check."""
