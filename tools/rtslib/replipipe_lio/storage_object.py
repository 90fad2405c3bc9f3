"""rtslib-fb storage object for the LIO backend "replipipe" (replipipe.ko).

A replipipe backstore is an iblock-like backstore on a primary block device
(`control` takes `udev_path=<dev>`); when it is the source of a pair in a
replication pipe, writes are mirrored to the pair's target device.  This class
mirrors rtslib_fb.tcm.BlockStorageObject: lookup mode without `dev`, creation
mode with it; WWN, attributes and ALUA groups are handled by the base class and
by RTSRoot.restore() exactly as for block.

Creating one loads replipipe.ko (LIO itself would not: see __init__).
More differs from block, because pipes name their sources by the kernel's
name "replipipe_<N>/<name>", and because the kernel keeps a backstore that is
in a pipe:
  - dump() records the HBA index and restore passes it back (`index` is a
    constructor argument of every rtslib storage object, but no built-in one
    dumps it), so a restored backstore keeps its name and the pipe that
    replipiped pushes back at start finds its source again;
  - one HBA may hold several backstores (replipipe_0/vol1 and
    replipipe_0/vol2, as DESIGN.md names them): rtslib makes one HBA per
    storage object, so a backstore created or restored into an HBA that
    exists goes into it, and deleting it leaves the HBA to the others;
  - delete() refuses while the backstore is in a pipe, before rtslib removes
    the LUNs that export it: the kernel would refuse the rmdir anyway (the
    pipe holds a configfs dependency on the backstore, rmdir gives EBUSY),
    but only after the LUNs were gone;
  - under RTSRoot.clear_existing() (targetctl clear, and targetctl restore,
    which clears first) such a backstore is kept instead (keeping_piped()),
    so that the clear goes on with everything else; and a restore adopts a
    kept backstore whose saved primary is the one it has. Restarting
    rtslib-fb-targetctl (which python3-rtslib-fb's upgrade does) while
    pipes exist thus brings every LUN back; it used to stop at the first
    such backstore, after every target was deleted, and restore nothing.
"""

import contextlib
import errno
import os
import re
import sys

from rtslib_fb.tcm import StorageObject, bs_cache
from rtslib_fb.utils import RTSLibError, fread, modprobe

PLUGIN = "replipipe"

# `info` of a replipipe backstore, after LIO's own lines:
#   replipipe primary: /dev/ram0 (ram0 1:0)  pipe: ID  target: /dev/ram1  state: InSync  dirty: 0/1024
#   replipipe primary: /dev/ram0 (ram0 1:0)  not in a pipe
_PRIMARY_RE = re.compile(r"replipipe primary: (\S+) \((\S+) (\d+):(\d+)\)")
_PIPE_RE = re.compile(r"pipe: (\S+)\s+target: (\S+)\s+state: (\S+)")
# With a write-intent record (control intent_path=), before the pipe part:
#   intent: /dev/vg0/vol1-wi (bound, 4 regions marked, 4096 KiB chunks)
#   intent: /dev/vg0/vol1-wi (tracks nothing)            enabled, unbound
#   intent_path: /dev/vg0/vol1-wi                        before enable
# and, when control set it, intent_chunk_kib: 1024
_INTENT_RE = re.compile(r"intent(?:_path)?: (/\S+)")
_INTENT_CHUNK_RE = re.compile(r"intent_chunk_kib: (\d+)")


# Set by keeping_piped(): the kernel names ("replipipe_<N>/<name>") of the
# backstores that delete() kept because they are in a pipe; None outside.
_kept = None


@contextlib.contextmanager
def keeping_piped():
    """Within it, delete() keeps a backstore that is in a pipe (with a
    warning on stderr) instead of raising. Yields the list of the kernel
    names of those it kept."""
    global _kept
    outer, _kept = _kept, []
    try:
        yield _kept
    finally:
        _kept = outer


# Set by restoring(), around RTSRoot.restore(): creating a backstore that
# keeping_piped() kept binds to it (_adopt_kept()) instead of failing.
_restoring = False


@contextlib.contextmanager
def restoring():
    """Within it (an RTSRoot.restore()), creating a backstore that exists
    and is in a pipe adopts it when its primary and WWN are the saved ones."""
    global _restoring
    outer, _restoring = _restoring, True
    try:
        yield
    finally:
        _restoring = outer


def is_restoring():
    return _restoring


def _hba_path(configfs_dir, index):
    return "%s/core/%s_%d" % (configfs_dir, PLUGIN, index)


def control_string(dev, intent=None, intent_chunk_kib=None):
    """The `control` string of a backstore on the primary device dev, with a
    write-intent record on intent (one bit per intent_chunk_kib KiB)."""
    control = "udev_path=%s" % dev
    if intent:
        control += ",intent_path=%s" % intent
    if intent_chunk_kib is not None:
        if not intent:
            raise RTSLibError("intent_chunk_kib needs an intent device")
        control += ",intent_chunk_kib=%d" % int(intent_chunk_kib)
    return control


class ReplipipeStorageObject(StorageObject):
    """An interface to configfs storage objects of the replipipe backstore."""

    def __init__(self, name, dev=None, wwn=None, control=None,
                 write_back=False, index=None):
        """
        Lookup mode when neither dev nor control is given: binds to the
        existing replipipe_<index>/<name>.  Creation mode otherwise.

        @param dev: the primary block device, e.g. "/dev/vg0/vol1".
        @param control: the string written to `control` (what dump() saved,
            "udev_path=/dev/vg0/vol1"); built from dev when not given.
        @param wwn: T10 unit serial, generated when None.
        @param write_back: accepted for symmetry with block's dump; the write
            cache is the emulate_write_cache attribute, restored with the
            other attributes.
        @param index: the HBA index N of replipipe_<N>; the first free one
            when None.
        """
        if dev is None and control is None:
            super().__init__(name, 'lookup', index)
            return
        # LIO request_module()s only its own backends (iblock, file, pscsi,
        # user), once; mkdir replipipe_<N> fails unless replipipe.ko is in.
        modprobe("replipipe")
        hba = None if index is None else \
            _hba_path(self.configfs_dir, int(index))
        if _restoring and hba is not None and \
                self._adopt_kept(name, index, hba, dev, control, wwn):
            return
        # An HBA that exists holds other backstores: this one goes in too
        # ('any' creates the HBA when it is missing; the backstore itself
        # is checked not to exist first, which 'any' would not do).
        mode = 'create'
        if hba is not None and os.path.isdir(hba):
            if os.path.exists("%s/%s" % (hba, name)):
                raise RTSLibError("Storage object %s_%d/%s exists"
                                  % (PLUGIN, int(index), name))
            mode = 'any'
        super().__init__(name, mode, index)
        try:
            self._configure(dev, control, wwn)
        except:
            self.delete()
            raise

    def _adopt_kept(self, name, index, hba, dev, control, wwn):
        """In a restore (after a clear that kept the backstores in pipes):
        if replipipe_<index>/<name> (in configfs directory hba) exists and
        is in a pipe, binds to it when its primary and WWN are the saved
        ones (True), else raises. False when there is no such backstore."""
        if not os.path.isdir("%s/%s" % (hba, name)):
            return False
        super().__init__(name, 'lookup', index)
        if not self.is_configured() or self.pipe is None:
            raise RTSLibError("Storage object %s exists" % self.kernel_name)
        saved = dev
        if saved is None:
            saved = dict(kv.split("=", 1) for kv in control.split(",")
                         if "=" in kv).get("udev_path")
        if saved != self.udev_path or (wwn and wwn != self.wwn):
            raise RTSLibError(
                "%s is in pipe %s with primary %s and WWN %s; the saved "
                "configuration has %s and %s: kept as it is"
                % (self.kernel_name, self.pipe, self.udev_path, self.wwn,
                   saved, wwn))
        return True

    def _configure(self, dev, control, wwn):
        self._check_self()
        if control is None:
            control = "udev_path=%s" % dev
        elif dev is not None and \
                "udev_path=%s" % dev not in control.split(","):
            raise RTSLibError("dev %s and control '%s' name different devices"
                              % (dev, control))
        self._control(control)
        self._enable()
        super()._configure(wwn)

    def _info(self):
        self._check_self()
        return " ".join(fread("%s/info" % self.path).split())

    def _primary(self):
        m = _PRIMARY_RE.search(self._info())
        if not m:
            raise RTSLibError("%s: no primary device in info" % self.kernel_name)
        return m

    def _get_kernel_name(self):
        return "%s_%d/%s" % (PLUGIN, self._backstore.index, self.name)

    def _get_index(self):
        return self._backstore.index

    def _get_intent_path(self):
        m = _INTENT_RE.search(self._info())
        return m.group(1) if m else None

    def _get_control(self):
        info = self._info()
        intent = _INTENT_RE.search(info)
        chunk = _INTENT_CHUNK_RE.search(info)
        return control_string(self.udev_path,
                              intent.group(1) if intent else None,
                              chunk.group(1) if intent and chunk else None)

    def _get_size(self):
        m = self._primary()
        sectors = fread("/sys/dev/block/%s:%s/size" % (m.group(3), m.group(4)))
        return int(sectors) * 512

    def _get_pipe(self):
        m = _PIPE_RE.search(self._info())
        return m.group(1) if m else None

    def _get_pipe_info(self):
        m = _PIPE_RE.search(self._info())
        if not m:
            return "not in a pipe"
        return "pipe %s -> %s %s" % (m.group(1), m.group(2), m.group(3))

    def _get_wb_enabled(self):
        self._check_self()
        return bool(int(self.get_attribute("emulate_write_cache")))

    kernel_name = property(_get_kernel_name,
            doc="replipipe_<N>/<name>: how pipes and replipipectl name it")
    index = property(_get_index, doc="The HBA index N of replipipe_<N>")
    intent_path = property(_get_intent_path,
            doc="The write-intent record's device, or None")
    control = property(_get_control,
            doc="The control string that configures this backstore again")
    size = property(_get_size, doc="Size of the primary device in bytes")
    pipe = property(_get_pipe,
            doc="ID of the pipe this backstore is the source of, or None")
    pipe_info = property(_get_pipe_info,
            doc="The pipe, target and pair state, as the module reports them")
    write_back = property(_get_wb_enabled,
            doc="True if write-back, False if write-through")

    def delete(self, save=False):
        if self.exists and self.is_configured() and self.pipe is not None:
            if _kept is not None:
                _kept.append(self.kernel_name)
                print("%s kept: it is in %s" % (self.kernel_name,
                                                 self.pipe_info),
                      file=sys.stderr)
                return
            raise RTSLibError(
                "Cannot delete %s: it is the source of a pair in pipe %s "
                "(%s), and replipipe.ko refuses to remove it (EBUSY) until "
                "the pair is removed (replipipectl create-or-modify --pipe "
                "PIPE with the remaining pairs, or replipipectl delete PIPE)"
                % (self.kernel_name, self.pipe, self.pipe_info))
        # rtslib removes the HBA after the backstore (one HBA per storage
        # object); an HBA that holds other backstores stays to them, and
        # only this one's entry leaves rtslib's cache of names.
        if self.exists and self._hba_shared():
            self._backstore.delete = self._forget_backstore
        try:
            super().delete(save)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            raise RTSLibError("Cannot delete %s: replipipe.ko refuses (%s); "
                              "is it in a pipe? %s"
                              % (self.kernel_name, os.strerror(e.errno),
                                 self.pipe_info))

    def _hba_shared(self):
        hba = self._backstore.path
        return any(d != self.name and os.path.isdir(os.path.join(hba, d))
                   for d in os.listdir(hba))

    def _forget_backstore(self):
        bs_cache.pop(self._backstore._lookup_key, None)

    def dump(self):
        d = super().dump()
        d['wwn'] = self.wwn
        d['dev'] = self.udev_path
        d['control'] = self.control
        d['index'] = self.index
        d['write_back'] = self.write_back
        return d
