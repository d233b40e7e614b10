package com.gemma4mobile.agent

import java.math.BigDecimal
import java.math.MathContext
import java.math.RoundingMode

/** Python's `repr(float)`: the shortest digits that round-trip, in Python's layout. */
object PyFloat {
    fun repr(d: Double): String {
        require(d.isFinite()) { "non-finite number $d" }
        if (d == 0.0) return if (1.0 / d < 0) "-0.0" else "0.0"
        val a = Math.abs(d)
        val exact = BigDecimal(a)
        var best = exact
        for (p in 1..17) {
            val r = exact.round(MathContext(p, RoundingMode.HALF_EVEN))
            if (r.toDouble() == a) {
                best = r
                break
            }
        }
        best = best.stripTrailingZeros()
        val digits = best.unscaledValue().toString()
        // value = 0.DIGITS x 10^decpt
        val decpt = digits.length - best.scale()
        val body =
            if (decpt > -4 && decpt <= 16) {
                when {
                    decpt <= 0 -> "0." + "0".repeat(-decpt) + digits
                    decpt >= digits.length -> digits + "0".repeat(decpt - digits.length) + ".0"
                    else -> digits.substring(0, decpt) + "." + digits.substring(decpt)
                }
            } else {
                val e = decpt - 1
                val mantissa = if (digits.length > 1) digits[0] + "." + digits.substring(1) else digits
                mantissa + "e" + (if (e < 0) "-" else "+") + String.format("%02d", Math.abs(e))
            }
        return if (d < 0) "-$body" else body
    }
}

/** Python string helpers, so that rendering matches the Python library character for character. */
object PyStr {
    private fun isSpace(cp: Int): Boolean =
        cp in 0x09..0x0d || cp in 0x1c..0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
            cp in 0x2000..0x200a || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000

    /** `str.strip()` with Python's notion of whitespace. */
    fun strip(s: String): String {
        var start = 0
        var end = s.length
        while (start < end) {
            val cp = s.codePointAt(start)
            if (!isSpace(cp)) break
            start += Character.charCount(cp)
        }
        while (end > start) {
            val cp = s.codePointBefore(end)
            if (!isSpace(cp)) break
            end -= Character.charCount(cp)
        }
        return s.substring(start, end)
    }

    /** Compare by code points (Python's order), not by UTF-16 units. */
    fun compare(
        a: String,
        b: String,
    ): Int {
        var i = 0
        var j = 0
        while (i < a.length && j < b.length) {
            val ca = a.codePointAt(i)
            val cb = b.codePointAt(j)
            if (ca != cb) return ca.compareTo(cb)
            i += Character.charCount(ca)
            j += Character.charCount(cb)
        }
        return (a.length - i).compareTo(b.length - j)
    }

    /** `str(v)` for JSON-like values. */
    fun str(v: Any?): String =
        when (v) {
            null -> {
                "None"
            }

            is String -> {
                v
            }

            is Boolean -> {
                if (v) "True" else "False"
            }

            is Double -> {
                if (v.isFinite()) {
                    PyFloat.repr(v)
                } else if (v.isNaN()) {
                    "nan"
                } else if (v > 0) {
                    "inf"
                } else {
                    "-inf"
                }
            }

            is List<*> -> {
                v.joinToString(", ", "[", "]") { if (it is String) "'$it'" else str(it) }
            }

            is Map<*, *> -> {
                v.entries.joinToString(", ", "{", "}") { (k, x) -> "'$k': " + (if (x is String) "'$x'" else str(x)) }
            }

            else -> {
                v.toString()
            }
        }
}
