# Debian packages (CPack DEB, one package per component):
#   replipipe       (component "daemon"): replipiped and replipipectl in
#                   /usr/sbin, the systemd unit, sysusers.d/tmpfiles.d entries,
#                   /etc/default/replipiped, the man pages
#   replipipe-dkms  (component "dkms", Architecture all): the module sources in
#                   /usr/src/replipipe-<version>/ (kmod/, uapi/, dkms.conf);
#                   its maintainer scripts drive DKMS
#   python3-replipipe (component "rtslib", Architecture all): the backstore's
#                   registration in rtslib-fb and targetcli-fb, a package of
#                   its own so that the daemon does not pull in Python
# Each has the changelog packaging/debian/changelog.in; lintian's findings
# are checked by tests/package-check.sh.
#
#   cmake --build <build> --target deb        (or: --target package)
# Either builds the whole project first: CPack runs the build tree's
# "preinstall" target, which depends on "all" with Makefiles.
#
# The .deb files land in the build directory. Included at the end of the top
# CMakeLists.txt (the targets replipiped and replipipectl must exist).
# tests/package-check.sh installs, checks and purges them.

set(REPLIPIPE_SYSTEMD_UNITDIR "/lib/systemd/system" CACHE PATH
	"Where the systemd unit is installed (absolute)")
set(REPLIPIPE_SYSCONFDIR "/etc" CACHE PATH
	"Where /etc/default/replipiped is installed (absolute)")

set(_rp_pkg ${PROJECT_SOURCE_DIR}/packaging)
set(_rp_pkg_out ${PROJECT_BINARY_DIR}/packaging)
set(_rp_dkms_dest src/${PROJECT_NAME}-${PROJECT_VERSION})

# dkms.conf names the version too; the package and the scripts use
# PROJECT_VERSION, so they must agree.
file(STRINGS ${PROJECT_SOURCE_DIR}/dkms.conf _rp_dkms_version_line
	REGEX "^PACKAGE_VERSION=")
string(REGEX REPLACE "^PACKAGE_VERSION=\"?([^\"]*)\"?.*$" "\\1"
	_rp_dkms_version "${_rp_dkms_version_line}")
if(NOT _rp_dkms_version STREQUAL PROJECT_VERSION)
	message(FATAL_ERROR "dkms.conf has PACKAGE_VERSION=\"${_rp_dkms_version}\" "
		"but project(replipipe VERSION ${PROJECT_VERSION}): make them equal")
endif()

# --- component "daemon": package replipipe ---------------------------------
foreach(_rp_bin replipiped replipipectl)
	if(NOT TARGET ${_rp_bin})
		message(FATAL_ERROR "packaging.cmake: target ${_rp_bin} does not "
			"exist; include(cmake/packaging.cmake) after add_subdirectory()")
	endif()
endforeach()
# The subdirectories install these without a component; this rule puts them
# into the package (installing a target twice is harmless).
install(TARGETS replipiped RUNTIME DESTINATION sbin COMPONENT daemon)
# In bin: members of group replipipe use it without root, and Debian leaves
# sbin off a user's PATH.
install(TARGETS replipipectl RUNTIME DESTINATION bin COMPONENT daemon)
install(FILES ${PROJECT_SOURCE_DIR}/controller/replipiped.service
	DESTINATION ${REPLIPIPE_SYSTEMD_UNITDIR} COMPONENT daemon)
install(FILES ${_rp_pkg}/sysusers.d/replipipe.conf
	DESTINATION lib/sysusers.d COMPONENT daemon)
install(FILES ${_rp_pkg}/tmpfiles.d/replipipe.conf
	DESTINATION lib/tmpfiles.d COMPONENT daemon)
install(FILES ${_rp_pkg}/default/replipiped
	DESTINATION ${REPLIPIPE_SYSCONFDIR}/default COMPONENT daemon)
# The unit's Documentation= points at cli.md.
install(FILES ${PROJECT_SOURCE_DIR}/docs/cli.md ${PROJECT_SOURCE_DIR}/README.md
	DESTINATION share/doc/replipipe COMPONENT daemon)

# --- component "rtslib": package python3-replipipe ---------------------------
# rtslib-fb / targetcli-fb registration of the replipipe backstore
# (docs/targetcli.md): a module and the .pth line that imports its hook.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/tools/rtslib/replipipe_lio
	DESTINATION lib/python3/dist-packages COMPONENT rtslib
	PATTERN "__pycache__" EXCLUDE)
install(FILES ${PROJECT_SOURCE_DIR}/tools/rtslib/replipipe_lio.pth
	DESTINATION lib/python3/dist-packages COMPONENT rtslib)
install(FILES ${PROJECT_SOURCE_DIR}/docs/targetcli.md
	DESTINATION share/doc/python3-replipipe COMPONENT rtslib)

# Man pages: roff in docs/man/, installed gzipped (gzip -n: reproducible).
find_program(REPLIPIPE_GZIP gzip REQUIRED)
set(_rp_man_gz)
foreach(_rp_page replipiped.8 replipipectl.1)
	set(_rp_src ${PROJECT_SOURCE_DIR}/docs/man/${_rp_page})
	set(_rp_out ${_rp_pkg_out}/man/${_rp_page})
	add_custom_command(OUTPUT ${_rp_out}.gz
		COMMAND ${CMAKE_COMMAND} -E make_directory ${_rp_pkg_out}/man
		COMMAND ${CMAKE_COMMAND} -E copy ${_rp_src} ${_rp_out}
		COMMAND ${REPLIPIPE_GZIP} -9nf ${_rp_out}
		DEPENDS ${_rp_src}
		COMMENT "Compressing man page ${_rp_page}"
		VERBATIM)
	list(APPEND _rp_man_gz ${_rp_out}.gz)
	string(REGEX REPLACE ".*\\." "" _rp_section ${_rp_page})
	install(FILES ${_rp_out}.gz DESTINATION share/man/man${_rp_section}
		COMPONENT daemon)
endforeach()
add_custom_target(replipipe_manpages ALL DEPENDS ${_rp_man_gz})

# --- component "dkms": package replipipe-dkms ------------------------------
# Only sources: the tree may hold Kbuild products of in-tree builds.
install(FILES ${PROJECT_SOURCE_DIR}/dkms.conf
	DESTINATION ${_rp_dkms_dest} COMPONENT dkms)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/kmod/
	DESTINATION ${_rp_dkms_dest}/kmod COMPONENT dkms
	FILES_MATCHING
	PATTERN "*.c" PATTERN "*.h" PATTERN "Kbuild" PATTERN "Makefile"
	PATTERN "*.mod.c" EXCLUDE
	PATTERN ".*" EXCLUDE)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/uapi/
	DESTINATION ${_rp_dkms_dest}/uapi COMPONENT dkms
	FILES_MATCHING PATTERN "*.h")

# --- each package's changelog and lintian overrides ---------------------------
set(REPLIPIPE_MAINTAINER "replipipe maintainers <replipipe@localhost>")
configure_file(${_rp_pkg}/debian/changelog.in ${_rp_pkg_out}/changelog.Debian
	@ONLY)
add_custom_command(OUTPUT ${_rp_pkg_out}/changelog.Debian.gz
	COMMAND ${REPLIPIPE_GZIP} -9nkf ${_rp_pkg_out}/changelog.Debian
	DEPENDS ${_rp_pkg_out}/changelog.Debian
	COMMENT "Compressing the Debian changelog"
	VERBATIM)
add_custom_target(replipipe_changelog ALL
	DEPENDS ${_rp_pkg_out}/changelog.Debian.gz)
foreach(_rp_comp_pkg daemon:replipipe dkms:replipipe-dkms
		rtslib:python3-replipipe)
	string(REPLACE ":" ";" _rp_comp_pkg ${_rp_comp_pkg})
	list(GET _rp_comp_pkg 0 _rp_comp)
	list(GET _rp_comp_pkg 1 _rp_deb)
	install(FILES ${_rp_pkg_out}/changelog.Debian.gz
		DESTINATION share/doc/${_rp_deb} COMPONENT ${_rp_comp})
	if(EXISTS ${_rp_pkg}/debian/${_rp_deb}/lintian-overrides)
		install(FILES ${_rp_pkg}/debian/${_rp_deb}/lintian-overrides
			DESTINATION share/lintian/overrides RENAME ${_rp_deb}
			COMPONENT ${_rp_comp})
	endif()
endforeach()

# --- maintainer scripts (@VAR@ filled in here) ------------------------------
set(REPLIPIPE_DKMS_NAME ${PROJECT_NAME})
set(REPLIPIPE_DKMS_VERSION ${PROJECT_VERSION})
set(CPACK_DEBIAN_RTSLIB_PACKAGE_NAME python3-replipipe)
foreach(_rp_script
		replipipe/postinst replipipe/prerm replipipe/postrm
		replipipe/conffiles
		replipipe-dkms/postinst replipipe-dkms/prerm replipipe-dkms/postrm
		python3-replipipe/prerm)
	configure_file(${_rp_pkg}/debian/${_rp_script}.in
		${_rp_pkg_out}/debian/${_rp_script} @ONLY)
endforeach()

# --- CPack -------------------------------------------------------------------
set(CPACK_PACKAGE_NAME ${PROJECT_NAME})
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "replipipe")
set(CPACK_PACKAGE_CONTACT "${REPLIPIPE_MAINTAINER}")
# No CPACK_PACKAGE_DESCRIPTION_SUMMARY: CPackDeb would prepend it to each
# component's description, whose first line is the synopsis already.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR})
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL daemon dkms rtslib)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_DAEMON_PACKAGE_NAME replipipe)
set(CPACK_DEBIAN_DAEMON_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_DAEMON_PACKAGE_SHLIBDEPS ON)
# Not libraries, so not from dpkg-shlibdeps: the unit runs modprobe (kmod);
# the module itself comes from replipipe-dkms (or a prebuilt module).
set(CPACK_DEBIAN_DAEMON_PACKAGE_DEPENDS "kmod")
set(CPACK_DEBIAN_DAEMON_PACKAGE_RECOMMENDS "replipipe-dkms (= ${PROJECT_VERSION}-1)")
set(CPACK_DEBIAN_DAEMON_PACKAGE_SUGGESTS "python3-replipipe")
set(CPACK_COMPONENT_DAEMON_DESCRIPTION
"replication pipes for the Linux SCSI target (LIO) - daemon and CLI
replipipe mirrors writes to LIO backstores of type replipipe to a paired
block device (a local disk or a peer's LUN over iSCSI, NVMe-oF or NBD),
synchronously or asynchronously, with dirty-region tracking and resync.
.
This package holds the daemon replipiped (the pipe store, the control
socket, the resync engine), its systemd unit, and the CLI replipipectl,
which implements the SMI-S method CreateOrModifyReplicationPipe.
The kernel module comes from replipipe-dkms.")
set(CPACK_DEBIAN_DAEMON_PACKAGE_CONTROL_EXTRA
	${_rp_pkg_out}/debian/replipipe/postinst
	${_rp_pkg_out}/debian/replipipe/prerm
	${_rp_pkg_out}/debian/replipipe/postrm
	${_rp_pkg_out}/debian/replipipe/conffiles)

set(CPACK_DEBIAN_DKMS_PACKAGE_NAME replipipe-dkms)
set(CPACK_DEBIAN_DKMS_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_DKMS_PACKAGE_SECTION kernel)
set(CPACK_DEBIAN_DKMS_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_DKMS_PACKAGE_DEPENDS "dkms")
# The headers that follow each new kernel, as dkms itself recommends: DKMS
# builds the module for a kernel update only if its headers come with it.
set(CPACK_DEBIAN_DKMS_PACKAGE_RECOMMENDS
	"linux-headers-amd64 | linux-headers-generic | linux-headers")
set(CPACK_COMPONENT_DKMS_DESCRIPTION
"replication pipes for the Linux SCSI target (LIO) - kernel module (DKMS)
replipipe.ko is a LIO backstore that mirrors every write to a paired block
device and tracks dirty regions for resync.
.
This package holds the module's sources; DKMS builds and installs it for
every installed kernel that has its headers, and for new kernels.")
set(CPACK_DEBIAN_DKMS_PACKAGE_CONTROL_EXTRA
	${_rp_pkg_out}/debian/replipipe-dkms/postinst
	${_rp_pkg_out}/debian/replipipe-dkms/prerm
	${_rp_pkg_out}/debian/replipipe-dkms/postrm)

set(CPACK_DEBIAN_RTSLIB_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_RTSLIB_PACKAGE_SECTION python)
set(CPACK_DEBIAN_RTSLIB_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_RTSLIB_PACKAGE_DEPENDS "python3:any, python3-rtslib-fb")
set(CPACK_DEBIAN_RTSLIB_PACKAGE_RECOMMENDS "replipipe (= ${PROJECT_VERSION}-1)")
set(CPACK_DEBIAN_RTSLIB_PACKAGE_ENHANCES "python3-rtslib-fb, targetcli-fb")
set(CPACK_COMPONENT_RTSLIB_DESCRIPTION
"replication pipes for the Linux SCSI target (LIO) - targetcli support
replipipe mirrors writes to LIO backstores of type replipipe to a paired
block device, synchronously or asynchronously, with dirty-region tracking.
.
This package registers the replipipe backstore in rtslib-fb and
targetcli-fb: /backstores/replipipe in targetcli, and saveconfig and
restoreconfig of its storage objects.")
set(CPACK_DEBIAN_RTSLIB_PACKAGE_CONTROL_EXTRA
	${_rp_pkg_out}/debian/python3-replipipe/prerm)

include(CPack)

# `deb`: DEB only, whatever CPACK_GENERATOR says.
add_custom_target(deb
	COMMAND ${CMAKE_CPACK_COMMAND} -G DEB
		--config ${PROJECT_BINARY_DIR}/CPackConfig.cmake -C $<CONFIG>
	WORKING_DIRECTORY ${PROJECT_BINARY_DIR}
	COMMENT "Building replipipe and replipipe-dkms .deb packages"
	USES_TERMINAL
	VERBATIM)
add_dependencies(deb replipiped replipipectl replipipe_manpages
	replipipe_changelog)
