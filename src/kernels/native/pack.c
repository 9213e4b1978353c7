/* Level-independent helpers of the native kernels. */
#include <string.h>

#include "kernels.h"

void hl_pack_i8(const int8_t *w, int M, int K, uint8_t *dst) {
  const int K2 = (K + 1) / 2;
  const int Mb = (M + 3) / 4;
  for (int rb = 0; rb < Mb; rb++) {
    uint8_t *blk = dst + (size_t)rb * K2 * 16;
    for (int r = 0; r < 4; r++) {
      const int row = rb * 4 + r;
      const int8_t *s = row < M ? w + (size_t)row * K : NULL;
      for (int q = 0; q < K2; q++) {
        const int16_t lo = s ? s[2 * q] : 0;
        const int16_t hi = s && 2 * q + 1 < K ? s[2 * q + 1] : 0;
        const uint32_t pr = (uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16);
        memcpy(blk + (size_t)q * 16 + r * 4, &pr, 4);
      }
    }
  }
}
