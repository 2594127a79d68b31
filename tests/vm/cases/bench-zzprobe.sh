# temporary probe
[ "${CHAOS_VM_BENCH:-}" = 1 ] || skip "probe"
grep -E ' / |chaos-bin' /proc/mounts
python3 - <<'PY'
import subprocess, time, shutil, os, re
def t(argv, n=40):
    v=[]
    for _ in range(n):
        a=time.perf_counter_ns(); subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); v.append((time.perf_counter_ns()-a)/1e6)
    v.sort(); return ' '.join('%.0f'%x for x in v)
print('true', t(['/bin/true']))
print('tc -V', t(['tc','-V']))
d='/dev/shm/tcstage'; os.makedirs(d, exist_ok=True)
out=subprocess.run(['ldd','/usr/sbin/tc'],stdout=subprocess.PIPE,text=True).stdout
libs=re.findall(r'(/\S+)', out)
for l in libs+['/usr/sbin/tc']: shutil.copy(l, d)
loader=[l for l in libs if 'ld-linux' in l][0]
print('libs', libs)
print('staged tc -V', t([d+'/'+os.path.basename(loader),'--library-path',d,d+'/tc','-V']))
print('tc -V again', t(['tc','-V']))
PY
