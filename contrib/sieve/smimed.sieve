# Needs in dovecot.conf (plugin section):
#   sieve_plugins = sieve_extprograms
#   sieve_extensions = +vnd.dovecot.filter +editheader
#   sieve_filter_bin_dir = /usr/local/lib/dovecot/sieve-filter
require ["vnd.dovecot.filter", "fileinto", "mailbox", "editheader"];

# When smimed fails (75: the passphrase was not available; 78: configuration), the message goes
# on as it came. Status fields in it are then a sender's, never smimed's: remove them, so that
# no rule below trusts a forgery. (Replace mx.example.org with your authserv_id.)
if not filter "smimed" {
  deleteheader "X-Smime-Status";
  deleteheader :contains "Authentication-Results" "mx.example.org";
}

if header :contains "X-Smime-Status" ["signature=invalid", "signature=mismatch"] {
  fileinto :create "S-MIME-Suspicious";
  stop;
}
