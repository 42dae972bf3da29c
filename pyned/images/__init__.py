"""Real guests from Debian's packages: fetching them and building their initramfs."""
