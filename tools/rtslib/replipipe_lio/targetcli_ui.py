"""targetcli-fb UI for the replipipe backstore: /backstores/replipipe with
`create name= dev= [intent= intent_chunk_kib=]` and `delete name=`, modelled
on targetcli's UIBlockBackstore / UIBlockStorageObject."""

from rtslib_fb import RTSRoot
from rtslib_fb.utils import RTSLibError
from targetcli.ui_backstore import (UIBackstore, UIStorageObject,
                                    bytes_to_human, complete_path)
import stat

from .storage_object import PLUGIN, ReplipipeStorageObject, control_string


class UIReplipipeStorageObject(UIStorageObject):
    def summary(self):
        so = self.rtsnode
        try:
            size = bytes_to_human(so.size)
        except RTSLibError:
            size = "no primary"
        return ("%s (%s) %s %s %s" % (so.udev_path, size, so.kernel_name,
                                      so.pipe_info, so.status), True)


class UIReplipipeBackstore(UIBackstore):
    """replipipe backstore UI: a block backstore whose writes replipipe.ko
    mirrors once it is the source of a pair in a pipe (replipipectl)."""

    def __init__(self, parent):
        self.so_cls = UIReplipipeStorageObject
        UIBackstore.__init__(self, PLUGIN, parent)

    def refresh(self):
        """UIBackstore.refresh(), but a second replipipe_<N>/<name> of a
        name (made by hand: create refuses it) is left out with a warning:
        configshell refuses two children of one name, and targetcli would
        fail at start for every command."""
        self._children = set([])
        shown = {}
        for so in sorted((so for so in RTSRoot().storage_objects
                          if so.plugin == self.name),
                         key=lambda so: so.index):
            if so.name in shown:
                self.shell.log.warning(
                    "%s not shown: %s has its name (targetcli and saved "
                    "LUNs name a backstore by its name alone)"
                    % (so.kernel_name, shown[so.name]))
                continue
            shown[so.name] = so.kernel_name
            self.so_cls(so, self)

    def ui_command_create(self, name, dev, wwn=None, index=None, intent=None,
                          intent_chunk_kib=None):
        '''
        Creates a replipipe storage object on the primary block device "dev".
        It is named replipipe_<index>/<name> in the kernel (index: the first
        free one when not given); put it into a pipe with replipipectl
        create-or-modify --pair replipipe_<index>/<name>=<target device>.
        "intent" is a block device for its write-intent record (after a crash
        only the regions it marks are resynced); "intent_chunk_kib" what one
        bit of the record covers (a power of two, default 4096).
        '''
        self.assert_root()
        wwn = self.ui_eval_param(wwn, 'string', None)
        index = self.ui_eval_param(index, 'number', None)
        intent = self.ui_eval_param(intent, 'string', None)
        intent_chunk_kib = self.ui_eval_param(intent_chunk_kib, 'number', None)
        so = ReplipipeStorageObject(
            name, dev, wwn=wwn, index=index,
            control=control_string(dev, intent, intent_chunk_kib))
        ui_so = UIReplipipeStorageObject(so, self)
        self.setup_model_alias(so)
        self.shell.log.info("Created replipipe storage object %s using %s."
                            % (so.kernel_name, dev))
        return self.new_node(ui_so)

    def ui_complete_create(self, parameters, text, current_param):
        if current_param not in ('dev', 'intent'):
            return []
        completions = complete_path(text, stat.S_ISBLK)
        if len(completions) == 1 and not completions[0].endswith('/'):
            completions = [completions[0] + ' ']
        return completions
