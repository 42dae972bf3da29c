"""Pure device models: state machines behind ``read``/``write``; no Unicorn, Lua or VM."""
