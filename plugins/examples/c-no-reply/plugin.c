// c-no-reply: a Sluice plugin in C (clang + wasi-libc, wit-bindgen's C generator).
//
// check-recipient refuses recipients whose local part is the `blocked` setting (default
// "noreply"), case-insensitively: 550 5.1.1. check-message adds `X-C-No-Reply: checked`.
//
// Memory: values returned to Sluice must be heap-allocated (the generated glue frees them after
// the call); the arguments a hook receives are its own to free. A fresh instance serves each
// SMTP transaction, so nothing outlives it.
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

#define DEFAULT_BLOCKED "noreply"

static void dup(plugin_string_t *out, const char *s) { plugin_string_dup(out, s); }

// The `blocked` setting as a NUL-terminated string (caller frees), or NULL with `*err` set.
static char *blocked_setting(plugin_string_t *err) {
  plugin_string_t key;
  plugin_string_set(&key, "blocked");
  sluice_filter_host_config_value_t value;
  if (!sluice_filter_host_get_config(&key, &value)) {
    return strdup(DEFAULT_BLOCKED);
  }
  char *out = NULL;
  if (value.tag == SLUICE_FILTER_TYPES_CONFIG_VALUE_TEXT && value.val.text.len > 0) {
    out = malloc(value.val.text.len + 1);
    memcpy(out, value.val.text.ptr, value.val.text.len);
    out[value.val.text.len] = '\0';
  } else if (err) {
    dup(err, "setting `blocked`: expected a non-empty string");
  }
  sluice_filter_types_config_value_free(&value);
  return out;
}

void exports_sluice_filter_hooks_describe(exports_sluice_filter_hooks_plugin_info_t *ret) {
  dup(&ret->name, "c-no-reply");
  dup(&ret->version, "0.1.0");
  ret->hooks = SLUICE_FILTER_TYPES_HOOKS_CHECK_RECIPIENT | SLUICE_FILTER_TYPES_HOOKS_CHECK_MESSAGE;
}

bool exports_sluice_filter_hooks_validate_config(plugin_string_t *err) {
  char *blocked = blocked_setting(err);
  if (!blocked) return false;
  free(blocked);
  return true;
}

void exports_sluice_filter_hooks_verify_sender(exports_sluice_filter_hooks_session_t *session,
                                               exports_sluice_filter_hooks_address_t *sender,
                                               exports_sluice_filter_hooks_verdict_t *ret) {
  ret->tag = SLUICE_FILTER_TYPES_VERDICT_CONTINUE;
  sluice_filter_types_session_free(session);
  sluice_filter_types_address_free(sender);
}

void exports_sluice_filter_hooks_check_recipient(exports_sluice_filter_hooks_session_t *session,
                                                 exports_sluice_filter_hooks_envelope_t *envelope,
                                                 exports_sluice_filter_hooks_address_t *recipient,
                                                 exports_sluice_filter_hooks_verdict_t *ret) {
  ret->tag = SLUICE_FILTER_TYPES_VERDICT_CONTINUE;
  char *blocked = blocked_setting(NULL);
  const uint8_t *a = recipient->address.ptr;
  size_t at = recipient->address.len;
  while (at > 0 && a[at - 1] != '@') at--;
  size_t local = at > 0 ? at - 1 : recipient->address.len;
  if (blocked && local == strlen(blocked)) {
    size_t i = 0;
    while (i < local && tolower(a[i]) == tolower((unsigned char)blocked[i])) i++;
    if (i == local) {
      ret->tag = SLUICE_FILTER_TYPES_VERDICT_REJECT;
      ret->val.reject.code = 550;
      dup(&ret->val.reject.enhanced, "5.1.1");
      dup(&ret->val.reject.text, "This address does not receive mail");
    }
  }
  free(blocked);
  sluice_filter_types_session_free(session);
  sluice_filter_types_envelope_free(envelope);
  sluice_filter_types_address_free(recipient);
}

void exports_sluice_filter_hooks_check_message(exports_sluice_filter_hooks_session_t *session,
                                               exports_sluice_filter_hooks_envelope_t *envelope,
                                               exports_sluice_filter_hooks_message_t *message,
                                               exports_sluice_filter_hooks_message_verdict_t *ret) {
  memset(ret, 0, sizeof *ret);
  ret->verdict.tag = SLUICE_FILTER_TYPES_VERDICT_CONTINUE;
  ret->add_headers.ptr = malloc(sizeof(sluice_filter_types_header_t));
  ret->add_headers.len = 1;
  dup(&ret->add_headers.ptr[0].name, "X-C-No-Reply");
  dup(&ret->add_headers.ptr[0].value, "checked");
  sluice_filter_types_session_free(session);
  sluice_filter_types_envelope_free(envelope);
  sluice_filter_types_message_free(message);
}

void exports_sluice_filter_hooks_on_delivery(exports_sluice_filter_hooks_delivery_report_t *report) {
  sluice_filter_types_delivery_report_free(report);
}

bool exports_sluice_filter_hooks_render_bounce(exports_sluice_filter_hooks_bounce_request_t *request,
                                               exports_sluice_filter_hooks_bounce_text_t *ret) {
  (void)ret;
  sluice_filter_types_bounce_request_free(request);
  return false;
}
