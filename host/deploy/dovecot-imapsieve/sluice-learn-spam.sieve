# A message put into Junk: learned as spam (sluice spam learn --spam).
require ["vnd.dovecot.pipe", "copy", "imapsieve"];
pipe :copy "sluice-learn" ["spam"];
