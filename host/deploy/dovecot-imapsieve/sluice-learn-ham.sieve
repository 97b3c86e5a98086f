# A message taken out of Junk: learned as ham (sluice spam learn --ham), unless it goes to the
# Trash (deleting spam says nothing about it).
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];
if environment :matches "imap.mailbox" "*" {
  set "mailbox" "${1}";
}
if string "${mailbox}" "Trash" {
  stop;
}
pipe :copy "sluice-learn" ["ham"];
