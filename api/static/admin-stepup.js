// The TOTP step-up, asked for in the page: an operation refused with STEP_UP_REQUIRED opens the
// dialog, the code goes to verifyTotp, and the operation runs again once.

import { $ } from "./admin-dom.js";
import { ApiError, gql } from "./admin-api.js";

const VERIFY = "mutation($code: String!) { verifyTotp(totpCode: $code) }";

function askForCode(why) {
  const dialog = $("step-up");
  const form = $("step-up-form");
  const input = $("step-up-code");
  const error = $("step-up-error");
  $("step-up-why").textContent = why;
  error.hidden = true;
  input.value = "";
  return new Promise((resolve) => {
    const finish = (result) => {
      form.removeEventListener("submit", submit);
      $("step-up-cancel").removeEventListener("click", cancel);
      dialog.removeEventListener("cancel", cancel);
      dialog.close();
      resolve(result);
    };
    const submit = async (event) => {
      event.preventDefault();
      try {
        await gql(VERIFY, { code: input.value.trim() });
        finish(true);
      } catch (failure) {
        error.textContent = failure.message;
        error.hidden = false;
        input.select();
      }
    };
    const cancel = (event) => {
      event.preventDefault();
      finish(false);
    };
    form.addEventListener("submit", submit);
    $("step-up-cancel").addEventListener("click", cancel);
    dialog.addEventListener("cancel", cancel);
    dialog.showModal();
    input.focus();
  });
}

/** Run `operation`; when the server asks for a step-up, ask for a code and run it once more. */
export async function withStepUp(operation) {
  try {
    return await operation();
  } catch (error) {
    if (!(error instanceof ApiError) || error.reason !== "STEP_UP_REQUIRED") throw error;
    if (!(await askForCode(error.message))) throw new ApiError([{ message: "Cancelled: no TOTP code given.", extensions: { code: "CANCELLED" } }]);
    return operation();
  }
}
