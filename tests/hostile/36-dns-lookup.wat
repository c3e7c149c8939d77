;; component text.
;; attack: resolve names (`wasi:sockets/ip-name-lookup@0.2.6`) with no
;;         socket grant: a DNS query is itself a channel out.
;; expect: refused: capability `sockets` is not granted to this variant.
(component
  (import "wasi:sockets/ip-name-lookup@0.2.6" (instance)))
