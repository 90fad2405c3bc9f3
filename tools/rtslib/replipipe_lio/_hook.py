"""Registers the replipipe backstore with rtslib-fb and targetcli-fb.

Why this exists: rtslib-fb maps every directory under
/sys/kernel/config/target/core/<type>_<N> to a class through the fixed dict
rtslib_fb.tcm.so_mapping (and bs_params for the other direction).  With one
replipipe_N/<name> backstore present, StorageObject.so_from_path() raises
KeyError('replipipe'), and with it `targetcli ls`, `targetcli saveconfig`,
`targetctl save` and `targetctl restore` (hence rtslib-fb-targetctl.service
at boot) fail for the whole host.  targetcli's UIBackstores.refresh() likewise
lists a fixed set of backstore UIs.  Neither has a plugin mechanism, so we add
our entries when those modules are imported, without touching their files.

What would make this unnecessary upstream: rtslib-fb loading storage-object
classes from an entry point group (e.g. importlib.metadata.entry_points(
group="rtslib_fb.storage_objects") filling so_mapping/bs_params), and
targetcli-fb building /backstores from a similar group
("targetcli.backstores") instead of its hard-coded list.  Our package would
then declare two entry points and this file and the .pth would go.

Mechanism: replipipe_lio.pth (in dist-packages) imports this module at
interpreter start (about 2 ms, no rtslib import).  It only puts a finder in
sys.meta_path that does nothing until one of the modules in _AFTER_IMPORT is
imported; it then runs the real loader and, right after the module's code,
our register function.
"""

import importlib.machinery
import sys


def _register_rtslib(tcm):
    """Debian's python3-rtslib-fb ships rtslib-fb twice: as rtslib_fb and,
    a copy rather than a link, under its old name rtslib. Both get the
    same class, built on rtslib_fb's StorageObject: what rtslib asks of a
    storage object (path, name, plugin, delete(), dump()) it has."""
    from .storage_object import PLUGIN, ReplipipeStorageObject
    tcm.so_mapping.setdefault(PLUGIN, ReplipipeStorageObject)
    tcm.bs_params.setdefault(ReplipipeStorageObject, dict(name=PLUGIN))


def _register_rtslib_root(root):
    """RTSRoot.clear_existing() keeps the backstores in pipes and goes on
    with everything else (storage_object.keeping_piped()). Called by
    targetctl clear, it then fails naming them, as before; called by
    restore, the restore adopts them. Its last step, rmdir of every
    core/<type>_<N>, stops at the HBA of a kept backstore (ENOTEMPTY): the
    other HBAs are removed here.

    An OSError leaves neither as such: targetctl restore takes one for "No
    saved config file" and exits 0, having cleared and restored nothing."""
    import errno
    import glob
    import os
    from .storage_object import is_restoring, keeping_piped, restoring
    RTSLibError = root.RTSLibError  # that package's (rtslib_fb or rtslib)
    clear_existing = root.RTSRoot.clear_existing
    restore = root.RTSRoot.restore

    # The arguments pass through as they are: a later rtslib-fb may add some.
    def clear_existing_keeping_piped(self, *args, **kwargs):
        with keeping_piped() as kept:
            try:
                clear_existing(self, *args, **kwargs)
            except OSError as e:
                if e.errno != errno.ENOTEMPTY or not kept:
                    raise RTSLibError("clear stopped: %s" % e) from e
                hbas = {"%s/core/%s" % (self.configfs_dir, k.split("/")[0])
                        for k in kept}
                for hba in glob.glob("%s/core/*_*" % self.configfs_dir):
                    if hba not in hbas:
                        try:
                            os.rmdir(hba)
                        except OSError as e:
                            raise RTSLibError("clear stopped: %s" % e) from e
        if kept and not is_restoring():
            raise RTSLibError("not cleared, in a pipe: %s (replipipectl "
                              "delete the pipe, or remove the pair, first)"
                              % ", ".join(kept))

    def restore_adopting_piped(self, *args, **kwargs):
        with restoring():
            try:
                return restore(self, *args, **kwargs)
            except OSError as e:
                raise RTSLibError("restore stopped: %s" % e) from e

    root.RTSRoot.clear_existing = clear_existing_keeping_piped
    root.RTSRoot.restore = restore_adopting_piped


def _register_rtslib_target(target):
    """A restore exports no saved LUN on a replipipe backstore it did not
    restore (storage_object.not_restored()): LUN.setup() binds a saved LUN
    ("/backstores/replipipe/<name>") to whatever storage object of that
    plugin and name exists, which may be a kept backstore whose saved
    primary or WWN differ, or one in another replipipe_<N>."""
    from .storage_object import not_restored
    setup = target.LUN.setup.__func__

    def setup_unless_not_restored(cls, tpg_obj, lun, err_func):
        if lun.get('storage_object') in not_restored():
            err_func("%s TPG %s LUN %s: its storage object %s was not "
                     "restored, and no other is exported in its place"
                     % (tpg_obj.parent_target.wwn, tpg_obj.tag,
                        lun.get('index'), lun['storage_object']))
            return
        return setup(cls, tpg_obj, lun, err_func)

    target.LUN.setup = classmethod(setup_unless_not_restored)


def _register_targetcli(ui_backstore):
    from .targetcli_ui import UIReplipipeBackstore
    refresh = ui_backstore.UIBackstores.refresh

    def refresh_with_replipipe(self):
        refresh(self)
        UIReplipipeBackstore(self)

    ui_backstore.UIBackstores.refresh = refresh_with_replipipe


def _after_rtslib_fb(register):
    """register, for a module of rtslib (the old name), once rtslib_fb is
    imported: our class is built on rtslib_fb, whose import runs our
    registrations with it, and they import storage_object. Imported first,
    storage_object would bring rtslib_fb in under it, and they would find it
    half-made (ImportError)."""
    def register_after_rtslib_fb(module):
        import rtslib_fb  # noqa: F401
        register(module)
    return register_after_rtslib_fb


_AFTER_IMPORT = {
    "rtslib_fb.tcm": _register_rtslib,
    "rtslib_fb.root": _register_rtslib_root,
    "rtslib_fb.target": _register_rtslib_target,
    "rtslib.tcm": _after_rtslib_fb(_register_rtslib),
    "rtslib.root": _after_rtslib_fb(_register_rtslib_root),
    "rtslib.target": _after_rtslib_fb(_register_rtslib_target),
    "targetcli.ui_backstore": _register_targetcli,
}


def _register(register, module):
    """register(module). A failure (an rtslib-fb that changed what we use)
    is told on stderr and goes no further: out of exec_module it would make
    `import rtslib_fb` fail, and targetcli and targetctl with it, for every
    backstore of the host."""
    try:
        register(module)
    except Exception as e:
        print("replipipe_lio: replipipe backstores are not registered with "
              "%s: %s: %s" % (module.__name__, type(e).__name__, e),
              file=sys.stderr)


# Plain classes, not importlib.abc ones: importing importlib.abc costs tens of
# milliseconds, and this module is imported by every python3 on the host.
class _Loader:
    """The real loader, then the register function."""

    def __init__(self, loader, register):
        self._loader = loader
        self._register = register

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register(self._register, module)

    def __getattr__(self, name):  # get_source etc. for tracebacks
        return getattr(self._loader, name)


class _Finder:
    def find_spec(self, fullname, path, target=None):
        register = _AFTER_IMPORT.get(fullname)
        if register is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, register)
        return spec


def install():
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
    for name, register in _AFTER_IMPORT.items():  # imported before us
        if name in sys.modules:
            _register(register, sys.modules[name])


install()
