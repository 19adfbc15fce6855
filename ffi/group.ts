/**
 * Unix groups by name or number, through libc's `getgrnam(3)` and
 * `getgrgid(3)`, so that NSS (LDAP, sssd) groups resolve as well as those
 * in /etc/group.
 *
 * @module
 */
import { cString, GROUP_STRUCT, libc } from "./libc.ts";

/** A group that exists on this system. */
export interface UnixGroup {
  /** Its name (or the number, for a gid that has no name). */
  name: string;
  /** Its gid. */
  gid: number;
}

/** The group named `nameOrGid` (a name, or a decimal gid); undefined if there is none. */
export function lookupGroup(nameOrGid: string): UnixGroup | undefined {
  const numeric = /^[0-9]{1,10}$/.test(nameOrGid) ? Number(nameOrGid) : undefined;
  if (numeric !== undefined && numeric >= 0xffffffff) return undefined;
  const entry = numeric === undefined
    ? libc().getgrnam(cString(nameOrGid, "group name"))
    : libc().getgrgid(numeric);
  if (entry === null) return undefined;
  const view = new Deno.UnsafePointerView(entry);
  const name = view.getPointer(GROUP_STRUCT.name);
  return {
    name: name === null ? nameOrGid : Deno.UnsafePointerView.getCString(name),
    gid: view.getUint32(GROUP_STRUCT.gid),
  };
}
