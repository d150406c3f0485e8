import { BlockList, isIPv4 } from "node:net";
import type { Subnet } from "../manifest/schema.js";

/** The subnets of an allowFrom list, or null when it is empty (everyone). */
export function allowList(subnets: readonly Subnet[]): BlockList | null {
  if (!subnets.length) return null;
  const list = new BlockList();
  for (const s of subnets) list.addSubnet(s.address, s.prefix, s.family);
  return list;
}

/** Whether an address (an IPv4-mapped IPv6 one read as IPv4) is in the list. */
export function allowed(list: BlockList, address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith("::ffff:") ? address.slice(7) : address;
  return isIPv4(v4) ? list.check(v4, "ipv4") : list.check(address, "ipv6");
}
