# shellcheck shell=bash
# python_rootfs DEST — assembles the file tree of the Python grpcio client image
# (images/interop-python.Containerfile) in DEST: the CPython interpreter and the
# grpcio/protobuf packages of the interop venv (scripts/install-interop-clients),
# the generated greeter stubs and interop/python's scripts, and every shared
# library they load (the ldd closure) with the dynamic loader. Like the slim
# Python images users build on, it carries an /etc/nsswitch.conf that looks in
# /etc/hosts before DNS (glibc's built-in default without the file is the
# other way round).
#
# Layout: /usr/local/bin/python3, /usr/local/lib/python3.X (the standard
# library, without its tests, IDLE, Tk, ensurepip and build config),
# /app/site-packages, /app/stubs, /app/*.py.
python_rootfs() {
  local dest="$1"
  local cache="${GRPC_BALANCER_CACHE:-$HOME/.cache/grpc-balancer}/interop"
  local venv="${cache}/python" stubs="${cache}/python-stubs"
  [[ -x "${venv}/bin/python" && -f "${stubs}/greeter_pb2.py" ]] \
    || { echo "the Python interop venv is missing; run scripts/install-interop-clients" >&2; return 1; }
  local interpreter prefix version site
  interpreter="$(readlink -f "${venv}/bin/python")"
  prefix="$("$interpreter" -c 'import sys; print(sys.base_prefix)')"
  version="$("$interpreter" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')"
  site="$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

  mkdir -p "${dest}/usr/local/bin" "${dest}/usr/local/lib" "${dest}/app/site-packages" \
    "${dest}/app/stubs" "${dest}/etc" "${dest}/tmp"
  chmod 1777 "${dest}/tmp"
  cp "$interpreter" "${dest}/usr/local/bin/python3"
  # The standard library; what a client never imports stays out (about 600 of
  # its 720 MB are tests, site-packages and the static build config).
  tar -C "${prefix}/lib" --exclude="${version}/test" --exclude="${version}/site-packages" \
    --exclude="${version}/idlelib" --exclude="${version}/tkinter" --exclude="${version}/turtledemo" \
    --exclude="${version}/ensurepip" --exclude="${version}/lib2to3" --exclude="${version}/config-*" \
    --exclude='__pycache__' --exclude='_test*.so' --exclude='_tkinter*.so' --exclude='_curses*.so' \
    -cf - "$version" | tar -C "${dest}/usr/local/lib" -xf -
  local package
  for package in grpc google typing_extensions.py; do
    [[ -e "${site}/${package}" ]] || { echo "the interop venv lacks ${package}; run scripts/install-interop-clients" >&2; return 1; }
    cp -a "${site}/${package}" "${dest}/app/site-packages/"
  done
  cp "${stubs}"/greeter_pb2*.py "${dest}/app/stubs/"
  cp interop/python/*.py "${dest}/app/"
  printf 'hosts: files dns\n' >"${dest}/etc/nsswitch.conf"
  printf 'nonroot:x:65532:65532::/tmp:/sbin/nologin\n' >"${dest}/etc/passwd"

  # Every shared library the interpreter and the extension modules load, at
  # the path the loader searches; the interpreter's own libpython too (its
  # RUNPATH names the build's prefix, which the image does not have).
  local libs lib
  libs="$(find "${dest}" \( -name '*.so' -o -name '*.so.*' \) -print0 | xargs -0 -r ldd 2>/dev/null
    ldd "$interpreter")"
  mkdir -p "${dest}/lib/x86_64-linux-gnu"
  while read -r lib; do
    cp -L "$lib" "${dest}/lib/x86_64-linux-gnu/"
  done < <(awk '/=> \// {print $3}' <<<"$libs" | sort -u)
  mkdir -p "${dest}/lib64"
  cp -L /lib64/ld-linux-x86-64.so.2 "${dest}/lib64/"
  # The bytecode is compiled once here: the container runs as non-root on a
  # read-only tree and would otherwise compile every module at each start.
  "$interpreter" -m compileall -q -j 0 "${dest}/usr/local/lib/${version}" "${dest}/app" >/dev/null
}
