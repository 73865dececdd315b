/*
 * vfs/ — the walraft VFS: a shim over SQLite's default unix VFS.
 *
 * It owns the database side of replication: the writer gate, capture of each write transaction's
 * WAL frames on the leader, and the apply path that writes committed frame sets into the local WAL
 * and wal-index. It never includes consensus/: it talks to a node through struct vfs_node_ops,
 * which ext/ wires to the runtime.
 */
#ifndef WALRAFT_VFS_H
#define WALRAFT_VFS_H

/* Registers the VFS under `name` over the current default VFS. `make_default` != 0 makes it the
 * default VFS. Returns an SQLITE_* code. Safe to call again: a second call is a no-op. */
int vfs_register(const char *name, int make_default);

#endif
