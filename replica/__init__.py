"""The archive's second copy: every stored object encrypted on the client side and kept on
an S3-compatible replica, checked, repaired and restored by drills."""
