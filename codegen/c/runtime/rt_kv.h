/* KV-cache kernels (issue 17 item 4; ir/ops/kv.py). */
#ifndef MOEC_RT_KV_H
#define MOEC_RT_KV_H
#include "moec_rt.h"

/* moec.kv_append: writes new's rows into cache at pos along axis, in place (cache's memory is the
 * caller's buffer), and makes out a view of cache.  Only the T new rows are written. */
int moec_k_kv_append(moec_ctx *ctx, const moec_tensor *cache, const moec_tensor *newt, const moec_tensor *pos,
                     int64_t axis, moec_tensor *out);
/* moec.kv_attention: attention of q [B,Hq,S,D] over the first L = pos + S rows of the k/v buffers
 * [B,Hkv,M,D] (moec_attention_rows: rows >= L are never read, so a step costs O(L), not O(M)); the mask
 * broadcasts to [B,Hq,S,L]; causal row i sees keys j <= pos + i. */
int moec_k_kv_attention(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v,
                        const moec_tensor *pos, const moec_tensor *mask, double scale, int causal, moec_tensor *y);
#endif
