"""The kernel's own reserve of free memory: `vm.min_free_kbytes` and the watermark
gaps `vm.watermark_scale_factor` sets (mm/page_alloc.c, v6.6).

calculate_min_free_kbytes() sets, at boot and on memory hotplug,
`min_free_kbytes = clamp(int_sqrt(lowmem_kbytes * 16), 128, 262144)` unless a user
set a larger value; `lowmem_kbytes` is nr_free_buffer_pages() (the managed pages of
the zones up to ZONE_NORMAL above their high watermarks), a little less than
MemTotal. With transparent huge pages, khugepaged raises it to its recommendation,
capped at 5 % of that lowmem (mm/khugepaged.c: set_recommended_min_free_kbytes()).

__setup_per_zone_wmarks(): each zone's min watermark is its share of
min_free_kbytes; low and high lie `max(min / 4, managed * watermark_scale_factor /
10000)` above min and above low. kswapd wakes below low and reclaims until high.
"""

from __future__ import annotations

import math

MIN_FREE_KBYTES_FLOOR = 128
MIN_FREE_KBYTES_CEILING = 262144
KHUGEPAGED_MAX_SHARE = 0.05  # min(recommended, nr_free_buffer_pages() / 20)
WATERMARK_SCALE_DENOMINATOR = 10000
WATERMARK_SCALE_FACTOR_DEFAULT = 10


def default_min_free_kbytes(lowmem_kib: int) -> int:
    """mm/page_alloc.c: calculate_min_free_kbytes(): int_sqrt is the integer square
    root (rounded down), as math.isqrt."""
    return min(max(math.isqrt(lowmem_kib * 16), MIN_FREE_KBYTES_FLOOR), MIN_FREE_KBYTES_CEILING)


def watermark_gap_share(watermark_scale_factor: int) -> float:
    """The share of a zone's managed memory between two watermarks (min -> low,
    low -> high) when the scale factor, not min / 4, decides the gap."""
    return watermark_scale_factor / WATERMARK_SCALE_DENOMINATOR
