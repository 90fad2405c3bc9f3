"""replipipe's storage object for rtslib-fb and its backstore for targetcli-fb.

Registration (see _hook.py) happens by itself when rtslib_fb / targetcli are
imported; importing this package has no side effect."""
