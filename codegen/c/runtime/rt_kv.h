/* KV-cache kernels (issue 17 item 4; ir/ops/kv.py). */
#ifndef MOEC_RT_KV_H
#define MOEC_RT_KV_H
#include "moec_rt.h"

/* moec.kv_append: writes new's rows into cache at pos along axis, in place (cache's memory is the
 * caller's buffer), and makes out a view of cache.  Only the T new rows are written; an f16 cache takes
 * f32 rows rounded to nearest even (vcvtps2ph / moec_f32_to_f16). */
int moec_k_kv_append(moec_ctx *ctx, const moec_tensor *cache, const moec_tensor *newt, const moec_tensor *pos,
                     int64_t axis, moec_tensor *out);
/* moec.kv_attention: attention of q [B,Hq,S,D] over the first L = pos + S rows of the k/v buffers
 * [B,Hkv,M,D] (moec_attention_rows: rows >= L are never read, so a step costs O(L), not O(M)); the mask
 * broadcasts to [B,Hq,S,L]; causal row i sees keys j <= pos + i.  k and v: both f32 or both f16 (read
 * widened; a prefill-sized query widens the first L rows once). */
int moec_k_kv_attention(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v,
                        const moec_tensor *pos, const moec_tensor *mask, double scale, int causal, moec_tensor *y);
/* moec.kv_step_attention (ir/ops/kv.py): y [B,Hq,S,Dv] = attention of q [B,Hq,S,D] over the first pos
 * positions of the caches k_cache [B,Hkv,M,D] and v_cache [B,Hkv,M,Dv] (rows) plus the S new
 * keys/values k_new [B,Hkv,S,D], v_new [B,Hkv,S,Dv] (causal), with a window > 0 only the keys less than
 * window positions back; one softmax over both.  Cache positions >= pos are never read.  q and the new
 * keys/values f32; the caches both f32 or both f16 (a half-precision cache, its rows widened on load). */
int moec_k_kv_step_attention(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *kc, const moec_tensor *vc,
                             const moec_tensor *kn, const moec_tensor *vn, const moec_tensor *pos, double scale,
                             int64_t window, moec_tensor *y);
#endif
