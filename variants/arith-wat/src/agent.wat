;; The arith variant in hand-written WebAssembly text (a core module; the
;; `wat` builder wraps it into an `agent` component with the host's WIT).
;;
;; `solve` reads an expression such as `(3+4)*12 - 7` from `task.input` and
;; answers with its value (`77`), computed with checked 64-bit integers (the
;; same results as variants/arith in Rust; error messages are shorter).
;;
;; The strategy is deliberately improvable. The baseline knows `+`, `-`, `*`
;; and parentheses; the switch globals below turn on one more piece of the
;; grammar each. When `solve` meets something it cannot handle, its error
;; names the switch it needs ("needs DIVISION"), which the host passes back
;; to `improve` as feedback. `improve` edits this very file: it turns on the
;; switch the feedback asks for most (or else the next one that is off) and
;; bumps $GENERATION, by rewriting the `(i32.const N)` of those globals.
;;
;; The input `spin` makes `solve` loop forever: the conformance suite's probe
;; that the host's fuel and deadline limits stop a runaway guest.
;;
;; Canonical ABI notes: strings arrive as (pointer, length) pairs the host
;; wrote through `cabi_realloc`; results are returned through a pointer to a
;; record laid out by the component model. Memory is a bump allocator that
;; never frees: every call runs in a fresh instance.
(module
  (import "vivarium:agent/log@0.1.0" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)

  ;; How many times this variant has improved itself; `improve` rewrites it.
  (global $GENERATION i32 (i32.const 0))
  ;; The grammar switches `improve` flips, one per generation (0 off, 1 on).
  ;; `/`: integer division (truncating; division by zero is an error).
  (global $DIVISION i32 (i32.const 0))
  ;; `%`: remainder (the sign of the dividend).
  (global $REMAINDER i32 (i32.const 0))
  ;; Unary minus: `-5`, `-(2+3)`, `3*-2`.
  (global $UNARY_MINUS i32 (i32.const 0))
  ;; `^`: exponentiation, right-associative, binds tighter than `*`.
  (global $POWER i32 (i32.const 0))

  ;; Deepest parenthesis/unary nesting accepted.
  (global $MAX_DEPTH i32 (i32.const 200))
  ;; Longest input accepted, in bytes.
  (global $MAX_INPUT i32 (i32.const 65536))

  ;; The bump allocator's next free byte (after the data below).
  (global $heap (mut i32) (i32.const 4096))
  ;; The parser: the next byte, the end of the input, the first error.
  (global $pos (mut i32) (i32.const 0))
  (global $end (mut i32) (i32.const 0))
  (global $err_ptr (mut i32) (i32.const 0))
  (global $err_len (mut i32) (i32.const 0))

  ;; ------------------------------------------------------------ data
  ;; Strings, at fixed offsets (used below as `(i32.const offset) (i32.const length)`).
  (data (i32.const 1024) "overflow") ;; overflow: 8 bytes
  (data (i32.const 1032) "number is too large") ;; too_large: 19 bytes
  (data (i32.const 1051) "missing ')'") ;; missing_close: 11 bytes
  (data (i32.const 1062) "unexpected end of expression") ;; end_of_input: 28 bytes
  (data (i32.const 1090) "unexpected ')'") ;; unexpected_close: 14 bytes
  (data (i32.const 1104) "unexpected character or operator") ;; unexpected_char: 32 bytes
  (data (i32.const 1136) "operator '^' is not supported: needs POWER") ;; needs_power: 42 bytes
  (data (i32.const 1178) "exponent is negative or too large") ;; bad_exponent: 33 bytes
  (data (i32.const 1211) "nested deeper than 200") ;; too_deep: 22 bytes
  (data (i32.const 1233) "unary '-' is not supported: needs UNARY_MINUS") ;; needs_unary_minus: 45 bytes
  (data (i32.const 1278) "operator '/' is not supported: needs DIVISION") ;; needs_division: 45 bytes
  (data (i32.const 1323) "operator '%' is not supported: needs REMAINDER") ;; needs_remainder: 46 bytes
  (data (i32.const 1369) "division by zero") ;; division_by_zero: 16 bytes
  (data (i32.const 1385) "expression longer than 65536 bytes") ;; too_long: 34 bytes
  (data (i32.const 1419) "unexpected input after the expression") ;; trailing: 37 bytes
  (data (i32.const 1456) "spin") ;; spin: 4 bytes
  (data (i32.const 1460) "arith in WebAssembly text") ;; notes: 25 bytes
  (data (i32.const 1485) "needs DIVISION") ;; needs_DIVISION: 14 bytes
  (data (i32.const 1499) "needs REMAINDER") ;; needs_REMAINDER: 15 bytes
  (data (i32.const 1514) "needs UNARY_MINUS") ;; needs_UNARY_MINUS: 17 bytes
  (data (i32.const 1531) "needs POWER") ;; needs_POWER: 11 bytes
  (data (i32.const 1542) "(global \24DIVISION i32 (i32.const ") ;; pat_DIVISION: 33 bytes
  (data (i32.const 1575) "(global \24REMAINDER i32 (i32.const ") ;; pat_REMAINDER: 34 bytes
  (data (i32.const 1609) "(global \24UNARY_MINUS i32 (i32.const ") ;; pat_UNARY_MINUS: 36 bytes
  (data (i32.const 1645) "(global \24POWER i32 (i32.const ") ;; pat_POWER: 30 bytes
  (data (i32.const 1675) "(global \24GENERATION i32 (i32.const ") ;; pat_GENERATION: 35 bytes
  (data (i32.const 1710) "every grammar switch is already on; nothing left to improve") ;; all_on: 59 bytes
  (data (i32.const 1769) "src/agent.wat") ;; self_path: 13 bytes
  (data (i32.const 1782) "src/agent.wat is not among the sources") ;; no_self: 38 bytes
  (data (i32.const 1820) "src/agent.wat does not declare each switch global exactly once") ;; bad_source: 62 bytes
  (data (i32.const 1882) "1") ;; one: 1 bytes
  (data (i32.const 1883) "arith: turn on ") ;; turn_on: 15 bytes

  ;; ------------------------------------------------------------ memory

  (func $alloc (param $size i32) (param $align i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (block $ok
      (loop $grow
        (br_if $ok (i32.le_u (global.get $heap) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (local.get $p))

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $new_size i32) (result i32)
    (local $p i32)
    (local.set $p (call $alloc (local.get $new_size) (local.get $align)))
    (if (local.get $old)
      (then (memory.copy (local.get $p) (local.get $old)
                         (select (local.get $old_size) (local.get $new_size)
                                 (i32.lt_u (local.get $old_size) (local.get $new_size))))))
    (local.get $p))

  ;; A fresh copy of `len` bytes at `src`.
  (func $dup (param $src i32) (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (call $alloc (local.get $len) (i32.const 1)))
    (memory.copy (local.get $p) (local.get $src) (local.get $len))
    (local.get $p))

  ;; Whether the `n` bytes at `a` and `b` are equal.
  (func $eq (param $a i32) (param $b i32) (param $n i32) (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; Where the `nlen` bytes at `needle` first occur in the `hlen` bytes at
  ;; `hay` at or after offset `from`, or -1.
  (func $find (param $hay i32) (param $hlen i32) (param $needle i32) (param $nlen i32) (param $from i32) (result i32)
    (local $i i32)
    (local.set $i (local.get $from))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (i32.add (local.get $i) (local.get $nlen)) (local.get $hlen)))
        (if (call $eq (i32.add (local.get $hay) (local.get $i)) (local.get $needle) (local.get $nlen))
          (then (return (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const -1))

  ;; How often the needle occurs in the haystack.
  (func $count (param $hay i32) (param $hlen i32) (param $needle i32) (param $nlen i32) (result i32)
    (local $at i32) (local $n i32)
    (block $done
      (loop $next
        (local.set $at (call $find (local.get $hay) (local.get $hlen) (local.get $needle) (local.get $nlen) (local.get $at)))
        (br_if $done (i32.lt_s (local.get $at) (i32.const 0)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; The decimal digits of `v` in fresh memory: (pointer, length).
  (func $format (param $v i64) (result i32 i32)
    (local $buf i32) (local $i i32) (local $u i64) (local $p i32)
    (local.set $buf (call $alloc (i32.const 24) (i32.const 1)))
    (local.set $i (i32.const 24))
    ;; Magnitude as unsigned, so i64::MIN works.
    (local.set $u (select (i64.sub (i64.const 0) (local.get $v)) (local.get $v) (i64.lt_s (local.get $v) (i64.const 0))))
    (loop $digit
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i64.store8 (i32.add (local.get $buf) (local.get $i))
                  (i64.add (i64.const 48) (i64.rem_u (local.get $u) (i64.const 10))))
      (local.set $u (i64.div_u (local.get $u) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $u) (i64.const 0))))
    (if (i64.lt_s (local.get $v) (i64.const 0))
      (then (local.set $i (i32.sub (local.get $i) (i32.const 1)))
            (i32.store8 (i32.add (local.get $buf) (local.get $i)) (i32.const 45))))
    (local.set $p (i32.add (local.get $buf) (local.get $i)))
    (local.get $p)
    (i32.sub (i32.const 24) (local.get $i)))

  ;; ------------------------------------------------------------ parsing

  ;; Record the first error; the parser unwinds by checking $err_len.
  (func $fail (param $ptr i32) (param $len i32) (result i64)
    (if (i32.eqz (global.get $err_len))
      (then (global.set $err_ptr (local.get $ptr)) (global.set $err_len (local.get $len))))
    (i64.const 0))

  (func $failed (result i32) (i32.ne (global.get $err_len) (i32.const 0)))

  ;; The next significant byte (after spaces, tabs and newlines), or 0 at the end.
  (func $peek (result i32)
    (local $c i32)
    (block $done
      (loop $skip
        (br_if $done (i32.ge_u (global.get $pos) (global.get $end)))
        (local.set $c (i32.load8_u (global.get $pos)))
        (br_if $done (i32.eqz (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
                                      (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13))))))
        (global.set $pos (i32.add (global.get $pos) (i32.const 1)))
        (br $skip)))
    (if (result i32) (i32.ge_u (global.get $pos) (global.get $end))
      (then (i32.const 0))
      (else (i32.load8_u (global.get $pos)))))

  (func $advance (global.set $pos (i32.add (global.get $pos) (i32.const 1))))

  (func $is_digit (param $c i32) (result i32)
    (i32.lt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 10)))

  ;; Checked arithmetic: each sets the "overflow" error instead of wrapping.
  (func $add (param $a i64) (param $b i64) (result i64)
    (local $r i64)
    (local.set $r (i64.add (local.get $a) (local.get $b)))
    (if (i64.lt_s (i64.and (i64.xor (local.get $a) (local.get $r)) (i64.xor (local.get $b) (local.get $r))) (i64.const 0))
      (then (return (call $fail (i32.const 1024) (i32.const 8)))))
    (local.get $r))

  (func $sub (param $a i64) (param $b i64) (result i64)
    (local $r i64)
    (local.set $r (i64.sub (local.get $a) (local.get $b)))
    (if (i64.lt_s (i64.and (i64.xor (local.get $a) (local.get $b)) (i64.xor (local.get $a) (local.get $r))) (i64.const 0))
      (then (return (call $fail (i32.const 1024) (i32.const 8)))))
    (local.get $r))

  (func $mul (param $a i64) (param $b i64) (result i64)
    (local $r i64)
    (if (i32.or (i64.eqz (local.get $a)) (i64.eqz (local.get $b))) (then (return (i64.const 0))))
    ;; i64::MIN * -1 (and the reverse) overflow, and would trap in div_s below.
    (if (i32.or (i32.and (i64.eq (local.get $a) (i64.const -1)) (i64.eq (local.get $b) (i64.const 0x8000000000000000)))
                (i32.and (i64.eq (local.get $b) (i64.const -1)) (i64.eq (local.get $a) (i64.const 0x8000000000000000))))
      (then (return (call $fail (i32.const 1024) (i32.const 8)))))
    (local.set $r (i64.mul (local.get $a) (local.get $b)))
    (if (i64.ne (i64.div_s (local.get $r) (local.get $b)) (local.get $a))
      (then (return (call $fail (i32.const 1024) (i32.const 8)))))
    (local.get $r))

  (func $pow (param $base i64) (param $exp i64) (result i64)
    (local $r i64)
    (local.set $r (i64.const 1))
    (block $done
      (loop $bit
        (br_if $done (i64.eqz (local.get $exp)))
        (if (i32.wrap_i64 (i64.and (local.get $exp) (i64.const 1)))
          (then (local.set $r (call $mul (local.get $r) (local.get $base)))
                (if (call $failed) (then (return (i64.const 0))))))
        (local.set $exp (i64.shr_u (local.get $exp) (i64.const 1)))
        (if (i64.ne (local.get $exp) (i64.const 0))
          (then (local.set $base (call $mul (local.get $base) (local.get $base)))
                (if (call $failed) (then (return (i64.const 0))))))
        (br $bit)))
    (local.get $r))

  ;; atom := number | '(' expr ')'
  (func $atom (param $depth i32) (result i64)
    (local $c i32) (local $v i64) (local $d i64)
    (local.set $c (call $peek))
    (if (call $is_digit (local.get $c))
      (then
        (block $done
          (loop $digit
            (br_if $done (i32.ge_u (global.get $pos) (global.get $end)))
            (local.set $c (i32.load8_u (global.get $pos)))
            (br_if $done (i32.eqz (call $is_digit (local.get $c))))
            (local.set $d (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48))))
            ;; v * 10 + d must stay <= i64::MAX
            (if (i64.gt_s (local.get $v) (i64.div_s (i64.sub (i64.const 0x7fffffffffffffff) (local.get $d)) (i64.const 10)))
              (then (return (call $fail (i32.const 1032) (i32.const 19)))))
            (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10)) (local.get $d)))
            (call $advance)
            (br $digit)))
        (return (local.get $v))))
    (if (i32.eq (local.get $c) (i32.const 40)) ;; (
      (then
        (call $advance)
        (local.set $v (call $expr (i32.add (local.get $depth) (i32.const 1))))
        (if (call $failed) (then (return (i64.const 0))))
        (if (i32.ne (call $peek) (i32.const 41)) (then (return (call $fail (i32.const 1051) (i32.const 11)))))
        (call $advance)
        (return (local.get $v))))
    (if (i32.eqz (local.get $c)) (then (return (call $fail (i32.const 1062) (i32.const 28)))))
    (if (i32.eq (local.get $c) (i32.const 41)) (then (return (call $fail (i32.const 1090) (i32.const 14)))))
    (call $fail (i32.const 1104) (i32.const 32)))

  ;; power := atom ('^' unary)?
  (func $power (param $depth i32) (result i64)
    (local $base i64) (local $exp i64)
    (local.set $base (call $atom (local.get $depth)))
    (if (call $failed) (then (return (i64.const 0))))
    (if (i32.ne (call $peek) (i32.const 94)) (then (return (local.get $base)))) ;; ^
    (if (i32.eqz (global.get $POWER)) (then (return (call $fail (i32.const 1136) (i32.const 42)))))
    (call $advance)
    (local.set $exp (call $unary (i32.add (local.get $depth) (i32.const 1))))
    (if (call $failed) (then (return (i64.const 0))))
    (if (i64.gt_u (local.get $exp) (i64.const 0xffffffff)) (then (return (call $fail (i32.const 1178) (i32.const 33)))))
    (call $pow (local.get $base) (local.get $exp)))

  ;; unary := '-' unary | power
  (func $unary (param $depth i32) (result i64)
    (local $v i64)
    (if (i32.gt_u (local.get $depth) (global.get $MAX_DEPTH)) (then (return (call $fail (i32.const 1211) (i32.const 22)))))
    (if (i32.ne (call $peek) (i32.const 45)) (then (return (call $power (local.get $depth))))) ;; -
    (if (i32.eqz (global.get $UNARY_MINUS)) (then (return (call $fail (i32.const 1233) (i32.const 45)))))
    (call $advance)
    (local.set $v (call $unary (i32.add (local.get $depth) (i32.const 1))))
    (if (call $failed) (then (return (i64.const 0))))
    (call $sub (i64.const 0) (local.get $v)))

  ;; term := unary (('*' | '/' | '%') unary)*
  (func $term (param $depth i32) (result i64)
    (local $v i64) (local $rhs i64) (local $op i32)
    (local.set $v (call $unary (local.get $depth)))
    (block $done
      (loop $next
        (br_if $done (call $failed))
        (local.set $op (call $peek))
        (br_if $done (i32.eqz (i32.or (i32.eq (local.get $op) (i32.const 42))
                                      (i32.or (i32.eq (local.get $op) (i32.const 47)) (i32.eq (local.get $op) (i32.const 37))))))
        (if (i32.and (i32.eq (local.get $op) (i32.const 47)) (i32.eqz (global.get $DIVISION)))
          (then (return (call $fail (i32.const 1278) (i32.const 45)))))
        (if (i32.and (i32.eq (local.get $op) (i32.const 37)) (i32.eqz (global.get $REMAINDER)))
          (then (return (call $fail (i32.const 1323) (i32.const 46)))))
        (call $advance)
        (local.set $rhs (call $unary (local.get $depth)))
        (br_if $done (call $failed))
        (if (i32.eq (local.get $op) (i32.const 42))
          (then (local.set $v (call $mul (local.get $v) (local.get $rhs))))
          (else
            (if (i64.eqz (local.get $rhs)) (then (return (call $fail (i32.const 1369) (i32.const 16)))))
            (if (i32.and (i64.eq (local.get $v) (i64.const 0x8000000000000000)) (i64.eq (local.get $rhs) (i64.const -1)))
              (then (return (call $fail (i32.const 1024) (i32.const 8)))))
            (local.set $v (if (result i64) (i32.eq (local.get $op) (i32.const 47))
                            (then (i64.div_s (local.get $v) (local.get $rhs)))
                            (else (i64.rem_s (local.get $v) (local.get $rhs)))))))
        (br $next)))
    (local.get $v))

  ;; expr := term (('+' | '-') term)*
  (func $expr (param $depth i32) (result i64)
    (local $v i64) (local $rhs i64) (local $op i32)
    (local.set $v (call $term (local.get $depth)))
    (block $done
      (loop $next
        (br_if $done (call $failed))
        (local.set $op (call $peek))
        (br_if $done (i32.eqz (i32.or (i32.eq (local.get $op) (i32.const 43)) (i32.eq (local.get $op) (i32.const 45)))))
        (call $advance)
        (local.set $rhs (call $term (local.get $depth)))
        (br_if $done (call $failed))
        (local.set $v (if (result i64) (i32.eq (local.get $op) (i32.const 43))
                        (then (call $add (local.get $v) (local.get $rhs)))
                        (else (call $sub (local.get $v) (local.get $rhs)))))
        (br $next)))
    (local.get $v))

  ;; ------------------------------------------------------------ task agent

  ;; solve(task) -> result<answer, string>. Parameters: the task's id,
  ;; domain, instruction and input, each (pointer, length).
  (func (export "vivarium:agent/task-agent@0.1.0#solve")
    (param $id i32) (param $id_len i32) (param i32 i32 i32 i32) (param $input i32) (param $input_len i32)
    (result i32)
    (local $v i64) (local $ret i32) (local $out i32) (local $out_len i32)
    (if (i32.and (i32.eq (local.get $input_len) (i32.const 4))
                 (call $eq (local.get $input) (i32.const 1456) (i32.const 4)))
      (then (loop $forever (br $forever))))
    ;; result<answer, string>: tag at 0; answer {output, notes: option<string>} at 4.
    (local.set $ret (call $alloc (i32.const 24) (i32.const 4)))
    (global.set $pos (local.get $input))
    (global.set $end (i32.add (local.get $input) (local.get $input_len)))
    (if (i32.gt_u (local.get $input_len) (global.get $MAX_INPUT))
      (then (drop (call $fail (i32.const 1385) (i32.const 34))))
      (else
        (local.set $v (call $expr (i32.const 0)))
        (if (i32.and (i32.eqz (call $failed)) (i32.ne (call $peek) (i32.const 0)))
          (then (drop (call $fail (i32.const 1419) (i32.const 37)))))))
    (if (call $failed)
      (then
        (call $log (i32.const 3) (global.get $err_ptr) (global.get $err_len)) ;; warn
        (i32.store8 (local.get $ret) (i32.const 1))
        (i32.store offset=4 (local.get $ret) (call $dup (global.get $err_ptr) (global.get $err_len)))
        (i32.store offset=8 (local.get $ret) (global.get $err_len))
        (return (local.get $ret))))
    (call $format (local.get $v))
    (local.set $out_len)
    (local.set $out)
    (i32.store8 (local.get $ret) (i32.const 0))
    (i32.store offset=4 (local.get $ret) (local.get $out))
    (i32.store offset=8 (local.get $ret) (local.get $out_len))
    (i32.store8 offset=12 (local.get $ret) (i32.const 1))
    (i32.store offset=16 (local.get $ret) (call $dup (i32.const 1460) (i32.const 25)))
    (i32.store offset=20 (local.get $ret) (i32.const 25))
    (local.get $ret))

  ;; ------------------------------------------------------------ meta agent

  ;; Switch i (0 DIVISION, 1 REMAINDER, 2 UNARY_MINUS, 3 POWER): on?
  (func $switch_on (param $i i32) (result i32)
    (if (result i32) (i32.eq (local.get $i) (i32.const 0)) (then (global.get $DIVISION))
      (else (if (result i32) (i32.eq (local.get $i) (i32.const 1)) (then (global.get $REMAINDER))
        (else (if (result i32) (i32.eq (local.get $i) (i32.const 2)) (then (global.get $UNARY_MINUS))
          (else (global.get $POWER))))))))

  ;; Switch i's name and the feedback that asks for it ("needs NAME"):
  ;; the name is the needle without its first 6 bytes.
  (func $switch_needle (param $i i32) (result i32 i32)
    (if (result i32 i32) (i32.eq (local.get $i) (i32.const 0)) (then (i32.const 1485) (i32.const 14))
      (else (if (result i32 i32) (i32.eq (local.get $i) (i32.const 1)) (then (i32.const 1499) (i32.const 15))
        (else (if (result i32 i32) (i32.eq (local.get $i) (i32.const 2)) (then (i32.const 1514) (i32.const 17))
          (else (i32.const 1531) (i32.const 11))))))))

  ;; The switch to turn on next: the one the feedback names most often
  ;; among those still off (ties go to the order above), else the first one
  ;; still off; -1 when all are on.
  (func $next_switch (param $fb i32) (param $fb_len i32) (result i32)
    (local $i i32) (local $best i32) (local $best_count i32) (local $first_off i32) (local $c i32)
    (local $needle i32) (local $needle_len i32)
    (local.set $best (i32.const -1))
    (local.set $first_off (i32.const -1))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 4)))
        (if (i32.eqz (call $switch_on (local.get $i)))
          (then
            (if (i32.lt_s (local.get $first_off) (i32.const 0)) (then (local.set $first_off (local.get $i))))
            (call $switch_needle (local.get $i))
            (local.set $needle_len)
            (local.set $needle)
            (local.set $c (call $count (local.get $fb) (local.get $fb_len) (local.get $needle) (local.get $needle_len)))
            (if (i32.gt_u (local.get $c) (local.get $best_count))
              (then (local.set $best (local.get $i)) (local.set $best_count (local.get $c))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (select (local.get $best) (local.get $first_off) (i32.ge_s (local.get $best) (i32.const 0))))

  ;; Rewrite `<pattern>N)` (exactly one occurrence) in the text at $src to
  ;; `<pattern><digits>)`: a fresh copy, or (0, 0) when the pattern does not
  ;; occur exactly once.
  (func $set_const (param $src i32) (param $len i32) (param $pat i32) (param $pat_len i32)
                   (param $digits i32) (param $digits_len i32) (result i32 i32)
    (local $at i32) (local $value_end i32) (local $out i32) (local $out_len i32) (local $head i32)
    (local.set $at (call $find (local.get $src) (local.get $len) (local.get $pat) (local.get $pat_len) (i32.const 0)))
    (if (i32.lt_s (local.get $at) (i32.const 0)) (then (return (i32.const 0) (i32.const 0))))
    (if (i32.ge_s (call $find (local.get $src) (local.get $len) (local.get $pat) (local.get $pat_len)
                              (i32.add (local.get $at) (i32.const 1))) (i32.const 0))
      (then (return (i32.const 0) (i32.const 0))))
    (local.set $head (i32.add (local.get $at) (local.get $pat_len)))
    (local.set $value_end (local.get $head))
    (block $done
      (loop $digit
        (br_if $done (i32.ge_u (local.get $value_end) (local.get $len)))
        (br_if $done (i32.eqz (call $is_digit (i32.load8_u (i32.add (local.get $src) (local.get $value_end))))))
        (local.set $value_end (i32.add (local.get $value_end) (i32.const 1)))
        (br $digit)))
    (local.set $out_len (i32.add (i32.add (local.get $head) (local.get $digits_len))
                                 (i32.sub (local.get $len) (local.get $value_end))))
    (local.set $out (call $alloc (local.get $out_len) (i32.const 1)))
    (memory.copy (local.get $out) (local.get $src) (local.get $head))
    (memory.copy (i32.add (local.get $out) (local.get $head)) (local.get $digits) (local.get $digits_len))
    (memory.copy (i32.add (i32.add (local.get $out) (local.get $head)) (local.get $digits_len))
                 (i32.add (local.get $src) (local.get $value_end))
                 (i32.sub (local.get $len) (local.get $value_end)))
    (local.get $out)
    (local.get $out_len))

  ;; Switch i's global declaration up to its value: "(global $NAME i32 (i32.const ".
  (func $switch_pattern (param $i i32) (result i32 i32)
    (if (result i32 i32) (i32.eq (local.get $i) (i32.const 0)) (then (i32.const 1542) (i32.const 33))
      (else (if (result i32 i32) (i32.eq (local.get $i) (i32.const 1)) (then (i32.const 1575) (i32.const 34))
        (else (if (result i32 i32) (i32.eq (local.get $i) (i32.const 2)) (then (i32.const 1609) (i32.const 36))
          (else (i32.const 1645) (i32.const 30))))))))

  ;; improve(ctx) -> result<proposal, string>. Parameters: self-id, sources,
  ;; history, feedback (each pointer, length) and iterations-left.
  (func (export "vivarium:agent/meta-agent@0.1.0#improve")
    (param i32 i32) (param $sources i32) (param $n_sources i32) (param i32 i32)
    (param $fb i32) (param $fb_len i32) (param i32)
    (result i32)
    (local $ret i32) (local $which i32) (local $i i32) (local $file i32) (local $src i32) (local $src_len i32)
    (local $text i32) (local $text_len i32) (local $pat i32) (local $pat_len i32)
    (local $digits i32) (local $digits_len i32) (local $edit i32) (local $summary i32) (local $name i32)
    (local $name_len i32) (local $needle i32) (local $needle_len i32)
    ;; result<proposal, string>: tag at 0; proposal {summary, edits} at 4.
    (local.set $ret (call $alloc (i32.const 20) (i32.const 4)))
    (local.set $which (call $next_switch (local.get $fb) (local.get $fb_len)))
    (if (i32.lt_s (local.get $which) (i32.const 0))
      (then (return (call $err (local.get $ret) (i32.const 1710) (i32.const 59)))))
    ;; Find our own source among the sources (16 bytes each: path, contents).
    (local.set $src (i32.const -1))
    (block $found
      (loop $next
        (br_if $found (i32.ge_u (local.get $i) (local.get $n_sources)))
        (local.set $file (i32.add (local.get $sources) (i32.mul (local.get $i) (i32.const 16))))
        (if (i32.and (i32.eq (i32.load offset=4 (local.get $file)) (i32.const 13))
                     (call $eq (i32.load (local.get $file)) (i32.const 1769) (i32.const 13)))
          (then (local.set $src (i32.load offset=8 (local.get $file)))
                (local.set $src_len (i32.load offset=12 (local.get $file)))
                (br $found)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (i32.lt_s (local.get $src) (i32.const 0))
      (then (return (call $err (local.get $ret) (i32.const 1782) (i32.const 38)))))
    ;; Turn the switch on, then bump GENERATION.
    (call $switch_pattern (local.get $which))
    (local.set $pat_len)
    (local.set $pat)
    (call $set_const (local.get $src) (local.get $src_len) (local.get $pat) (local.get $pat_len) (i32.const 1882) (i32.const 1))
    (local.set $text_len)
    (local.set $text)
    (if (i32.eqz (local.get $text)) (then (return (call $err (local.get $ret) (i32.const 1820) (i32.const 62)))))
    (call $format (i64.extend_i32_u (i32.add (global.get $GENERATION) (i32.const 1))))
    (local.set $digits_len)
    (local.set $digits)
    (call $set_const (local.get $text) (local.get $text_len) (i32.const 1675) (i32.const 35) (local.get $digits) (local.get $digits_len))
    (local.set $text_len)
    (local.set $text)
    (if (i32.eqz (local.get $text)) (then (return (call $err (local.get $ret) (i32.const 1820) (i32.const 62)))))
    ;; The summary: "arith: turn on NAME".
    (call $switch_needle (local.get $which))
    (local.set $needle_len)
    (local.set $needle)
    (local.set $name (i32.add (local.get $needle) (i32.const 6)))
    (local.set $name_len (i32.sub (local.get $needle_len) (i32.const 6)))
    (local.set $summary (call $alloc (i32.add (i32.const 15) (local.get $name_len)) (i32.const 1)))
    (memory.copy (local.get $summary) (i32.const 1883) (i32.const 15))
    (memory.copy (i32.add (local.get $summary) (i32.const 15)) (local.get $name) (local.get $name_len))
    (call $log (i32.const 2) (local.get $summary) (i32.add (i32.const 15) (local.get $name_len))) ;; info
    ;; One edit: write(source-file { path, contents }); tag at 0, payload at 4.
    (local.set $edit (call $alloc (i32.const 20) (i32.const 4)))
    (i32.store8 (local.get $edit) (i32.const 0))
    (i32.store offset=4 (local.get $edit) (call $dup (i32.const 1769) (i32.const 13)))
    (i32.store offset=8 (local.get $edit) (i32.const 13))
    (i32.store offset=12 (local.get $edit) (local.get $text))
    (i32.store offset=16 (local.get $edit) (local.get $text_len))
    (i32.store8 (local.get $ret) (i32.const 0))
    (i32.store offset=4 (local.get $ret) (local.get $summary))
    (i32.store offset=8 (local.get $ret) (i32.add (i32.const 15) (local.get $name_len)))
    (i32.store offset=12 (local.get $ret) (local.get $edit))
    (i32.store offset=16 (local.get $ret) (i32.const 1))
    (local.get $ret))

  ;; Fill $ret with err(message) and return it.
  (func $err (param $ret i32) (param $msg i32) (param $len i32) (result i32)
    (i32.store8 (local.get $ret) (i32.const 1))
    (i32.store offset=4 (local.get $ret) (call $dup (local.get $msg) (local.get $len)))
    (i32.store offset=8 (local.get $ret) (local.get $len))
    (local.get $ret))
)
