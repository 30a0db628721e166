// What the signed-in admin may do, from `currentAdmin { role }`. The API decides (it refuses
// anything the role does not allow); the console only hides what would be refused. When the
// server has no `currentAdmin` (an older server), the role is unknown and every control shows.

import { gql } from "./admin-api.js";

/** Roles allowed each kind of action (DESIGN.md "Roles"). */
const ALLOWED = {
  editSegments: ["OWNER", "ADMIN", "MARKETER"],
  adjustPoints: ["OWNER", "ADMIN"],
  review: ["OWNER", "ADMIN", "REVIEWER"],
  eraseMembers: ["OWNER", "ADMIN"],
  exportMembers: ["OWNER", "ADMIN"],
  editExperiments: ["OWNER", "ADMIN", "MARKETER"],
};

let current = { email: null, role: null };

/** Read who is signed in; {email, role}, both null when the server cannot say. */
export async function loadCurrentAdmin() {
  try {
    const data = await gql("{ currentAdmin { email role } }");
    current = { email: data.currentAdmin.email, role: data.currentAdmin.role };
  } catch {
    current = { email: null, role: null };
  }
  return current;
}

export const currentAdmin = () => current;

/** Whether the controls for `action` (a key of ALLOWED) are shown. */
export function can(action) {
  return current.role === null || ALLOWED[action].includes(current.role);
}
