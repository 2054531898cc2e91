# Needs in dovecot.conf (plugin section):
#   sieve_plugins = sieve_extprograms
#   sieve_extensions = +vnd.dovecot.filter
#   sieve_filter_bin_dir = /usr/local/lib/dovecot/sieve-filter
require ["vnd.dovecot.filter", "fileinto", "mailbox"];

filter "smimed";

if header :contains "X-Smime-Status" ["signature=invalid", "signature=mismatch"] {
  fileinto :create "S-MIME-Suspicious";
  stop;
}
