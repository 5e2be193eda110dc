"""Planning: a grid file becomes a validated grid, then frozen work units (one solver over a split's images × λ), after loading what they need; filters and the cost estimate."""
