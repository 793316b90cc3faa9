//! VM image builder: kernel + initramfs with the static agent as /init.
