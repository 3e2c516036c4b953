/* The kernel's ublk interface (include/uapi/linux/ublk_cmd.h), with the
 * parts that Linux 6.1's headers (Debian 12's linux-libc-dev) lack:
 * ioctl-encoded commands (6.3), user copy (6.5) and zoned devices (6.6).
 * Every value here is the kernel's; each block is defined only when the
 * system header does not already define it, so newer headers win.
 *
 * The structures that grew after 6.1 (ublk_params; the zone_append_lba
 * union in ublksrv_io_cmd; the nr_zones union in ublksrv_io_desc) keep
 * their layout, so this file declares its own complete ublk_params
 * (nbdzone_ublk_params) and uses ublksrv_io_cmd.addr for the append LBA
 * and ublksrv_io_desc.nr_sectors for the number of zones of a report.
 */
#ifndef NBDZONE_UBLK_UAPI_H
#define NBDZONE_UBLK_UAPI_H

#include <errno.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <linux/types.h>
#include <linux/ublk_cmd.h>

/* Commands encoded like ioctls ('u', nr, struct); the legacy bare numbers
 * may be compiled out of newer kernels.
 */
#ifndef UBLK_U_CMD_ADD_DEV
#define UBLK_U_CMD_GET_DEV_INFO \
  _IOR ('u', UBLK_CMD_GET_DEV_INFO, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_ADD_DEV \
  _IOWR ('u', UBLK_CMD_ADD_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_DEL_DEV \
  _IOWR ('u', UBLK_CMD_DEL_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_DEV \
  _IOWR ('u', UBLK_CMD_START_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_STOP_DEV \
  _IOWR ('u', UBLK_CMD_STOP_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_SET_PARAMS \
  _IOWR ('u', UBLK_CMD_SET_PARAMS, struct ublksrv_ctrl_cmd)
#endif
#ifndef UBLK_U_CMD_START_USER_RECOVERY
#define UBLK_U_CMD_GET_PARAMS \
  _IOR ('u', UBLK_CMD_GET_PARAMS, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_USER_RECOVERY \
  _IOWR ('u', UBLK_CMD_START_USER_RECOVERY, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_END_USER_RECOVERY \
  _IOWR ('u', UBLK_CMD_END_USER_RECOVERY, struct ublksrv_ctrl_cmd)
#endif
#ifndef UBLK_U_IO_FETCH_REQ
#define UBLK_U_IO_FETCH_REQ \
  _IOWR ('u', UBLK_IO_FETCH_REQ, struct ublksrv_io_cmd)
#define UBLK_U_IO_COMMIT_AND_FETCH_REQ \
  _IOWR ('u', UBLK_IO_COMMIT_AND_FETCH_REQ, struct ublksrv_io_cmd)
#endif

#ifndef UBLK_F_CMD_IOCTL_ENCODE
#define UBLK_F_CMD_IOCTL_ENCODE (1UL << 6)
#endif
#ifndef UBLK_F_USER_COPY
#define UBLK_F_USER_COPY        (1UL << 7)
#endif
#ifndef UBLK_F_ZONED
#define UBLK_F_ZONED            (1ULL << 8)
#endif

/* User copy: request data is read and written with pread/pwrite on
 * /dev/ublkcN at UBLKSRV_IO_BUF_OFFSET + (q_id << UBLK_QID_OFF) +
 * (tag << UBLK_TAG_OFF) + offset in the request.
 */
#ifndef UBLK_TAG_OFF
#define UBLK_IO_BUF_OFF         0
#define UBLK_IO_BUF_BITS        25
#define UBLK_TAG_OFF            UBLK_IO_BUF_BITS
#define UBLK_TAG_BITS           16
#define UBLK_QID_OFF            (UBLK_TAG_OFF + UBLK_TAG_BITS)
#define UBLK_QID_BITS           12
#endif

#ifndef UBLK_IO_OP_ZONE_APPEND
#define UBLK_IO_OP_ZONE_OPEN      10
#define UBLK_IO_OP_ZONE_CLOSE     11
#define UBLK_IO_OP_ZONE_FINISH    12
#define UBLK_IO_OP_ZONE_APPEND    13
#define UBLK_IO_OP_ZONE_RESET_ALL 14
#define UBLK_IO_OP_ZONE_RESET     15
/* The buffer of a report holds struct blk_zone entries; a zero-length
 * entry ends a short report.
 */
#define UBLK_IO_OP_REPORT_ZONES   18
#endif

#ifndef UBLK_PARAM_TYPE_DEVT
#define UBLK_PARAM_TYPE_DEVT    (1 << 2)
struct ublk_param_devt {
  __u32 char_major;
  __u32 char_minor;
  __u32 disk_major;
  __u32 disk_minor;
};
#endif

#ifndef UBLK_PARAM_TYPE_ZONED
#define UBLK_PARAM_TYPE_ZONED   (1 << 3)
struct ublk_param_zoned {
  __u32 max_open_zones;
  __u32 max_active_zones;
  __u32 max_zone_append_sectors;
  __u8 reserved[20];
};
#endif

/* The kernel's struct ublk_params up to the zoned part (6.6's layout;
 * the kernel accepts a shorter len than its own structure).
 */
struct nbdzone_ublk_params {
  __u32 len;
  __u32 types;
  struct ublk_param_basic basic;
  struct ublk_param_discard discard;
  struct ublk_param_devt devt;
  struct ublk_param_zoned zoned;
};

/* Layouts the kernel relies on. */
_Static_assert (sizeof (struct ublksrv_ctrl_cmd) == 32, "ublksrv_ctrl_cmd");
_Static_assert (sizeof (struct ublksrv_io_cmd) == 16, "ublksrv_io_cmd");
_Static_assert (sizeof (struct ublksrv_io_desc) == 24, "ublksrv_io_desc");
_Static_assert (sizeof (struct ublk_param_basic) == 32, "ublk_param_basic");
_Static_assert (sizeof (struct ublk_param_discard) == 20,
                "ublk_param_discard");
_Static_assert (sizeof (struct ublk_param_zoned) == 32, "ublk_param_zoned");
_Static_assert (offsetof (struct nbdzone_ublk_params, zoned) == 76,
                "nbdzone_ublk_params");

#endif /* NBDZONE_UBLK_UAPI_H */
