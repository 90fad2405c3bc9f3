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
    kept backstore whose saved control (primary, write-intent record) and
    WWN are the ones it has. Restarting rtslib-fb-targetctl (which
    python3-rtslib-fb's upgrade does) while pipes exist thus brings every
    LUN back; it used to stop at the first such backstore, after every
    target was deleted, and restore nothing. A kept backstore that differs
    is left as it is, and the restore exports none of the saved LUNs on it
    (not_restored(), _hook.py): rtslib binds a saved LUN to any storage
    object of its plugin and name;
  - for the same reason a name is used in one replipipe HBA only: targetcli
    (/backstores/replipipe/<name>) and saved LUNs name a backstore by its
    name alone;
  - what replipipe.ko would refuse with a bare errno (EINVAL, EBUSY) is
    checked here first, and what it still refuses comes out as an
    RTSLibError that names the parameter: targetcli shows RTSLibError as a
    message, any other exception as a traceback (interactive) or as its
    bare "[Errno 22] Invalid argument" (one command).
"""

import contextlib
import errno
import glob
import os
import re
import stat
import sys

from rtslib_fb.tcm import StorageObject, bs_cache
from rtslib_fb.utils import RTSLibError, fread, modprobe

PLUGIN = "replipipe"

# replipipe.ko's limits (kmod/rp_backend.c rp_parse_control(), uapi): a
# path in control fits LIO's SE_UDEV_PATH_LEN (512 with its NUL);
# intent_chunk_kib is a power of two from REPLIPIPE_REGION_KIB_MIN to
# RP_INTENT_CHUNK_KIB_MAX; enable refuses a backstore whose
# "replipipe_<N>/<name>" is longer than REPLIPIPE_SOURCE_MAX_LEN, a name
# pipes could not give.
_PATH_MAX = 511
_CHUNK_KIB_MIN = 4
_CHUNK_KIB_MAX = 1024 * 1024
_KERNEL_NAME_MAX = 127
_CONTROL_KEYS = ("udev_path", "intent_path", "intent_chunk_kib")

# `info` of a replipipe backstore, after LIO's own line
# (rp_show_configfs_dev_params()):
#   replipipe primary: /dev/ram0 (ram0 1:0)  pipe: ID  target: /dev/ram1  state: InSync  dirty: 0/1024
#   replipipe primary: /dev/ram0 (ram0 1:0)  not in a pipe
#   replipipe primary: none udev_path: /dev/ram0  not in a pipe      before enable
# With a write-intent record (control intent_path=), before the pipe part:
#   intent: /dev/vg0/vol1-wi (bound, 4 regions marked, 4096 KiB chunks)
#   intent: /dev/vg0/vol1-wi (tracks nothing)     or (header not known, writes wait)
#   intent_path: /dev/vg0/vol1-wi                 before enable
# and, when control set it, " intent_chunk_kib: 1024". Paths are absolute
# and may hold spaces (not ',' nor a newline: control splits on those), so
# each is a lazy group bounded by what the module prints after it, and info
# is matched as read, its double spaces included.
_INFO_RE = re.compile(
    r"replipipe primary: (?:(?P<primary>/.*?) \((?P<bdev>\S+) "
    r"(?P<major>\d+):(?P<minor>\d+)\)|none udev_path: .*?)"
    r"(?:  intent: (?P<intent>/.*?) \([^()\n]*\)"
    r"|  intent_path: (?P<intent_path>/.*?))?"
    r"(?: intent_chunk_kib: (?P<chunk>\d+))?"
    r"  (?:pipe: (?P<pipe>.+?)  target: (?P<target>.+?)  state: (?P<state>\S+)"
    r"  dirty: \d+/\d+|not in a pipe)$", re.M)
_NOT_IN_A_PIPE = "  not in a pipe"
# The pipe of a backstore whose info does not read as above (a module of
# another version?) and does not say "not in a pipe": delete() and the
# clear must go on protecting it rather than take it for one in no pipe.
_PIPE_UNKNOWN = "(unknown: info not understood)"


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


# Set by restoring(), around RTSRoot.restore(): the names of the replipipe
# backstores that the restore could not create or adopt (so that their
# saved LUNs are not bound to another backstore of that name); None
# outside. Creating a backstore that keeping_piped() kept binds to it
# (_adopt_kept()) instead of failing.
_not_restored = None


@contextlib.contextmanager
def restoring():
    """Within it (an RTSRoot.restore()), creating a backstore that exists
    and is in a pipe adopts it when its saved control and WWN are the ones
    it has."""
    global _not_restored
    outer, _not_restored = _not_restored, set()
    try:
        yield
    finally:
        _not_restored = outer


def is_restoring():
    return _not_restored is not None


def not_restored():
    """The saved-LUN paths ("/backstores/replipipe/<name>") of the
    backstores the running restore did not restore; empty outside one."""
    return {"/backstores/%s/%s" % (PLUGIN, name)
            for name in _not_restored or ()}


def _hba_path(configfs_dir, index):
    return "%s/core/%s_%d" % (configfs_dir, PLUGIN, index)


def _indexes_holding(configfs_dir, name):
    """The N of every replipipe_<N>/<name> in configfs."""
    found = []
    for path in glob.glob("%s/core/%s_*/%s"
                          % (configfs_dir, PLUGIN, glob.escape(name))):
        n = path.split("/")[-2].rsplit("_", 1)[1]
        if n.isdigit() and os.path.isdir(path):
            found.append(int(n))
    return sorted(found)


def _check_path(param, path):
    """What rp_match_path() accepts, checked before the kernel sees it."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise RTSLibError("%s must be an absolute path, not %r"
                          % (param, path))
    # The module splits control on both: "/dev/a,b" would reach it as
    # the path "/dev/a" and an unknown parameter "b".
    if "," in path or "\n" in path:
        raise RTSLibError("%s %r: replipipe.ko cannot take a path with ',' "
                          "or a newline (use a link without them, e.g. in "
                          "/dev/disk/by-id)" % (param, path))
    if len(path.encode()) > _PATH_MAX:
        raise RTSLibError("%s: replipipe.ko takes a path of at most %d bytes"
                          % (param, _PATH_MAX))


def _check_chunk(kib):
    try:
        kib = int(kib)
    except (TypeError, ValueError):
        raise RTSLibError("intent_chunk_kib %r is not a number" % (kib,))
    if not _CHUNK_KIB_MIN <= kib <= _CHUNK_KIB_MAX or kib & (kib - 1):
        raise RTSLibError("intent_chunk_kib must be a power of two from %d "
                          "to %d (KiB), not %d"
                          % (_CHUNK_KIB_MIN, _CHUNK_KIB_MAX, kib))
    return kib


def control_string(dev, intent=None, intent_chunk_kib=None):
    """The `control` string of a backstore on the primary device dev, with a
    write-intent record on intent (one bit per intent_chunk_kib KiB)."""
    _check_path("dev", dev)
    control = "udev_path=%s" % dev
    if intent:
        _check_path("intent", intent)
        control += ",intent_path=%s" % intent
    if intent_chunk_kib is not None:
        if not intent:
            raise RTSLibError("intent_chunk_kib needs an intent device")
        control += ",intent_chunk_kib=%d" % _check_chunk(intent_chunk_kib)
    return control


def _parse_control(control):
    """The parameters of a control string as replipipe.ko reads them
    (rp_parse_control(): split on ',' and newlines, the last of a key
    counts), checked as it checks them: a saved configuration's control
    is refused here, naming what is wrong, rather than by EINVAL."""
    params = {}
    for item in re.split(r"[,\n]", str(control).strip()):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or key not in _CONTROL_KEYS:
            raise RTSLibError("control '%s': unknown parameter '%s' "
                              "(replipipe.ko takes %s)"
                              % (control, item,
                                 ", ".join(k + "=" for k in _CONTROL_KEYS)))
        params[key] = value
    if "udev_path" not in params:
        raise RTSLibError("control '%s' has no udev_path= (the primary)"
                          % control)
    _check_path("udev_path", params["udev_path"])
    if "intent_path" in params:
        _check_path("intent_path", params["intent_path"])
    if "intent_chunk_kib" in params:
        if "intent_path" not in params:
            raise RTSLibError("control '%s': intent_chunk_kib= needs "
                              "intent_path=" % control)
        params["intent_chunk_kib"] = _check_chunk(params["intent_chunk_kib"])
    return params


def _check_device(param, path):
    """path is a block device that nobody holds exclusively (a mounted file
    system, another backstore, a pipe's target, LVM, MD), as enable needs
    it: the kernel says only EBUSY or ENOENT, and in dmesg why. Returns
    its device number."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise RTSLibError("%s %s: %s" % (param, path, e.strerror))
    if not stat.S_ISBLK(st.st_mode):
        raise RTSLibError("%s %s is not a block device" % (param, path))
    # What rtslib's is_dev_in_use() does for block: O_EXCL claims a block
    # device as the module's open does, and fails where that would. Read
    # only: closing a device opened for writing makes udev probe it again.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise RTSLibError("%s %s is in use (mounted, or held by another "
                              "backstore, a pipe's target, LVM, MD...)"
                              % (param, path))
        raise RTSLibError("%s %s: %s" % (param, path, e.strerror))
    os.close(fd)
    return st.st_rdev


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
        try:
            self._create(name, dev, control, wwn, index)
        except Exception:
            if _not_restored is not None:
                _not_restored.add(name)
            raise

    def _create(self, name, dev, control, wwn, index):
        if control is None:
            control = control_string(dev)
        elif dev is not None and \
                "udev_path=%s" % dev not in control.split(","):
            raise RTSLibError("dev %s and control '%s' name different devices"
                              % (dev, control))
        params = _parse_control(control)
        # LIO request_module()s only its own backends (iblock, file, pscsi,
        # user), once; mkdir replipipe_<N> fails unless replipipe.ko is in.
        modprobe("replipipe")
        if is_restoring() and self._adopt_kept(name, index, params, wwn):
            return
        held = _indexes_holding(self.configfs_dir, name)
        if held:
            raise RTSLibError(
                "Storage object %s exists: a name is used in one replipipe "
                "HBA only, as targetcli (/backstores/%s/%s) and saved LUNs "
                "name a backstore by its name alone"
                % (", ".join("%s_%d/%s" % (PLUGIN, n, name) for n in held),
                   PLUGIN, name))
        primary = _check_device("dev", params["udev_path"])
        if "intent_path" in params and \
                _check_device("intent", params["intent_path"]) == primary:
            raise RTSLibError("intent %s is the primary %s itself"
                              % (params["intent_path"], params["udev_path"]))
        # An HBA that exists holds other backstores: this one goes in too
        # ('any' creates the HBA when it is missing; the name was checked
        # free above, which 'any' would not do).
        mode = 'create'
        if index is not None and \
                os.path.isdir(_hba_path(self.configfs_dir, int(index))):
            mode = 'any'
        super().__init__(name, mode, index)
        try:
            self._configure(control, params, wwn)
        except:
            self.delete()
            raise
        self._record_index()

    def _adopt_kept(self, name, index, params, wwn):
        """In a restore (after a clear that kept the backstores in pipes):
        if replipipe_<index>/<name> exists (with no saved index: the one
        replipipe_<N>/<name>) and is in a pipe, binds to it when its control
        (primary, write-intent record and chunk) and WWN are the saved ones
        (True), else raises. False when there is no such backstore."""
        held = _indexes_holding(self.configfs_dir, name)
        if index is None and len(held) == 1:
            index = held[0]
        elif index is None or int(index) not in held:
            return False
        super().__init__(name, 'lookup', index)
        if not self.is_configured() or self.pipe is None:
            raise RTSLibError("Storage object %s exists" % self.kernel_name)
        control = self.control
        if _parse_control(control) != params or (wwn and wwn != self.wwn):
            raise RTSLibError(
                "%s is in pipe %s with control '%s' and WWN %s; the saved "
                "configuration has '%s' and %s: kept as it is, and no saved "
                "LUN of %s is exported on it"
                % (self.kernel_name, self.pipe, control, self.wwn,
                   ",".join("%s=%s" % kv for kv in sorted(params.items())),
                   wwn, name))
        # rtslib's delete() removes a backstore's ALUA groups (but
        # default_tg_pt_gp) before the backstore; kept, it still has them,
        # and RTSRoot.restore() creates the saved ones in 'create' mode:
        # one that exists would stop the restore, after the clear.
        for alua_tpg in self.alua_tpgs:
            if alua_tpg.name != 'default_tg_pt_gp':
                alua_tpg.delete()
        self._record_index()
        return True

    def _record_index(self):
        """rtslib's cache of names to HBA indexes (tcm.bs_cache) gets only
        the indexes it picks itself: a later creation without index in this
        process would pick ours again, and fail. An empty cache is filled
        from configfs at its next use, with ours."""
        if bs_cache:
            bs_cache[self._backstore._lookup_key] = self.index

    def _configure(self, control, params, wwn):
        self._check_self()
        if len(self.kernel_name.encode()) > _KERNEL_NAME_MAX:
            raise RTSLibError("%s: longer than %d bytes, a name replipipe.ko "
                              "refuses (pipes could not name it); a shorter "
                              "name, please" % (self.kernel_name,
                                                _KERNEL_NAME_MAX))
        # The module explains a refusal in the kernel log only; the errno
        # alone ("[Errno 22] Invalid argument") names no parameter.
        try:
            self._control(control)
        except OSError as e:
            raise RTSLibError("replipipe.ko refused control '%s' of %s: %s "
                              "(dmesg says why)"
                              % (control, self.kernel_name, e.strerror))
        try:
            self._enable()
        except OSError as e:
            raise RTSLibError(
                "replipipe.ko could not enable %s on the primary (dev) %s%s: "
                "%s (dmesg says why)"
                % (self.kernel_name, params["udev_path"],
                   " with the write-intent record (intent) %s"
                   % params["intent_path"] if "intent_path" in params else "",
                   e.strerror))
        try:
            super()._configure(wwn)
        except OSError as e:
            raise RTSLibError("%s: cannot set the WWN (wwn) %s: %s"
                              % (self.kernel_name, wwn, e.strerror))

    def _info(self):
        """info as the module wrote it (see _INFO_RE), or None"""
        self._check_self()
        return fread("%s/info" % self.path)

    def _parsed_info(self):
        return _INFO_RE.search(self._info())

    def _primary(self):
        m = self._parsed_info()
        if not m or not m.group('primary'):
            raise RTSLibError("%s: no primary device in info" % self.kernel_name)
        return m

    def _get_kernel_name(self):
        return "%s_%d/%s" % (PLUGIN, self._backstore.index, self.name)

    def _get_index(self):
        return self._backstore.index

    def _get_intent_path(self):
        m = self._parsed_info()
        return m and (m.group('intent') or m.group('intent_path'))

    def _get_control(self):
        info = self._info()
        m = _INFO_RE.search(info)
        # Saved without its write-intent record, the backstore would come
        # back without one: refuse instead.
        if not m:
            raise RTSLibError("%s: info not understood, its control cannot "
                              "be saved: %s" % (self.kernel_name,
                                                " ".join(info.split())))
        intent = m.group('intent') or m.group('intent_path')
        return control_string(self.udev_path, intent,
                              m.group('chunk') if intent else None)

    def _get_size(self):
        m = self._primary()
        sectors = fread("/sys/dev/block/%s:%s/size"
                        % (m.group('major'), m.group('minor')))
        return int(sectors) * 512

    def _get_pipe(self):
        info = self._info()
        m = _INFO_RE.search(info)
        if m:
            return m.group('pipe')
        return None if _NOT_IN_A_PIPE in info else _PIPE_UNKNOWN

    def _get_pipe_info(self):
        info = self._info()
        m = _INFO_RE.search(info)
        if not m:
            return ("not in a pipe" if _NOT_IN_A_PIPE in info else
                    "info: %s" % " ".join(info.split()))
        if not m.group('pipe'):
            return "not in a pipe"
        return "pipe %s -> %s %s" % (m.group('pipe'), m.group('target'),
                                     m.group('state'))

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
        # rtslib lets an rmdir's OSError through, which targetctl restore
        # (around its clear) takes for "no saved config file" and exits 0.
        try:
            super().delete(save)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise RTSLibError("Cannot delete %s: %s"
                                  % (self.kernel_name, e))
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
