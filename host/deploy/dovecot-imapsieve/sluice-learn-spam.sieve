# A message put into Junk: handed over to Sluice as spam (sluice spam submit --spam).
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];
set "user" "";
if environment :matches "imap.user" "*" {
  set "user" "${1}";
}
pipe :copy "sluice-learn" ["spam", "${user}"];
