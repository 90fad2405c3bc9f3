// SPDX-License-Identifier: GPL-2.0
/*
 * no-nss.c: linked into the statically linked guest tools (see
 * tests/vm/CMakeLists.txt) with ld's --wrap for the four functions below.
 *
 * libnl's address and protocol helpers call glibc's name lookups; the tools
 * never ask libnl for a host or protocol by name. In a static link, glibc's
 * versions would warn that they need glibc's shared NSS modules at run time
 * (and the guest has none). These stand in for them and fail the way a
 * lookup that finds nothing fails, so the link is warning-free and a call
 * that should never come reports an error instead of misbehaving.
 */
#include <netdb.h>
#include <stddef.h>

int __wrap_getaddrinfo(const char *node, const char *service,
		       const struct addrinfo *hints, struct addrinfo **res)
{
	(void)node;
	(void)service;
	(void)hints;
	*res = NULL;
	return EAI_FAIL;
}

/* Only ever handed the NULL that __wrap_getaddrinfo leaves in *res. */
void __wrap_freeaddrinfo(struct addrinfo *res)
{
	(void)res;
}

struct protoent *__wrap_getprotobyname(const char *name)
{
	(void)name;
	return NULL;
}

struct protoent *__wrap_getprotobynumber(int proto)
{
	(void)proto;
	return NULL;
}
