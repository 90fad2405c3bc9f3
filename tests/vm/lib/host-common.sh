# Host-side helpers shared by the VM runner and tests/kbuild-check.sh (bash, sourced).

# rp_kernel_versions: every kernel version that can be booted here, i.e. has both
# /boot/vmlinuz-KV and /lib/modules/KV/kernel (header-only versions have neither),
# oldest first.
rp_kernel_versions() {
	local d kv
	for d in /lib/modules/*/kernel; do
		[ -d "$d" ] || continue
		kv=${d%/kernel}
		kv=${kv##*/}
		[ -e "/boot/vmlinuz-$kv" ] && printf '%s\n' "$kv"
	done | sort -V
}

# rp_newest_kernel_version: the newest bootable kernel version, or fails.
rp_newest_kernel_version() {
	local kv
	kv=$(rp_kernel_versions | tail -n 1)
	if [ -z "$kv" ]; then
		echo "no kernel with both /boot/vmlinuz-KV and /lib/modules/KV/kernel" >&2
		return 1
	fi
	printf '%s\n' "$kv"
}

# rp_header_kernel_versions: every version whose /lib/modules/KV/build has a
# Makefile (headers installed), oldest first.
rp_header_kernel_versions() {
	local d kv
	for d in /lib/modules/*/build; do
		[ -f "$d/Makefile" ] || continue
		kv=${d%/build}
		printf '%s\n' "${kv##*/}"
	done | sort -V
}

# rp_default_kernel_version: the kernel Debian's linux-image-amd64 installs
# (Debian 12's default series), if it can be booted here; else fails.
rp_default_kernel_version() {
	local kv
	kv=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2> /dev/null |
		sed -n 's/^linux-image-\([^ ,|]*\).*/\1/p')
	if [ -z "$kv" ] || ! rp_kernel_versions | grep -qxF "$kv"; then
		echo "no bootable kernel of Debian's linux-image-amd64${kv:+ ($kv)}" >&2
		return 1
	fi
	printf '%s\n' "$kv"
}
