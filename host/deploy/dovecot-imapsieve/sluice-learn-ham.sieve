# A message taken out of Junk: handed over to Sluice as ham (sluice spam submit --ham),
# unless it goes to the Trash — by name, or any mailbox with the \Trash special-use flag —
# (deleting spam says nothing about it).
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables", "special-use"];
if environment :matches "imap.mailbox" "*" {
  set "mailbox" "${1}";
}
if string "${mailbox}" "Trash" {
  stop;
}
if specialuse_exists "${mailbox}" "\\Trash" {
  stop;
}
set "user" "";
if environment :matches "imap.user" "*" {
  set "user" "${1}";
}
pipe :copy "sluice-learn" ["ham", "${user}"];
