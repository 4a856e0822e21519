#ifndef COSI_CMNL_H
#define COSI_CMNL_H
// libmnl (netlink sockets, message and attribute helpers) and the kernel's rtnetlink
// definitions the network controllers build and read messages with.
#include <libmnl/libmnl.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/if_arp.h>
#include <linux/veth.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// setns(2) into a network namespace (glibc declares setns only with _GNU_SOURCE).
#define COSI_CLONE_NEWNET 0x40000000
static inline int cosi_setns_net(int fd) { return (int)syscall(SYS_setns, fd, COSI_CLONE_NEWNET); }

// ioctl(2) on a namespace file: its type (CLONE_NEWNET for a network namespace). Linux 4.11.
#ifndef NS_GET_NSTYPE
#define NS_GET_NSTYPE 0xb703
#endif
static inline int cosi_ns_get_nstype(int fd) { return ioctl(fd, NS_GET_NSTYPE); }
#endif
