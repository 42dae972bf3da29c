"""The Lua host (ned's role): the only package that imports lupa."""
