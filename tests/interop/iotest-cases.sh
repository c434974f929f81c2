# The utility commands of iotest 153, in its order, for iotest-153.sh and
# iotest-qemu-system.sh (sourced).  $QI/$QM are qemu-io/qemu-img or
# miniblock-io/miniblock-img; $IMG is the overlay, $BASE its backing file.
# (qemu-img create needs -F since 7.0.)
CASES=(io-rw io-ro open open-r info check compare map amend commit resize rebase snapshot convert dd bench bench-w create)
run_case() {  # run_case L CASE
    local L=$1 c=$2
    case $c in
    io-rw) $QI $L -c "read 0 512" "$IMG" ;;
    io-ro) $QI $L -r -c "read 0 512" "$IMG" ;;
    open) $QI -c "open $L $IMG" -c "read 0 512" ;;
    open-r) $QI -c "open -r $L $IMG" -c "read 0 512" ;;
    info) $QM info $L "$IMG" ;;
    check) $QM check $L "$IMG" ;;
    compare) $QM compare $L "$IMG" "$IMG" ;;
    map) $QM map $L "$IMG" ;;
    amend) $QM amend -o "" $L "$IMG" ;;
    commit) $QM commit $L "$IMG" ;;
    resize) $QM resize $L "$IMG" 32M ;;
    rebase) $QM rebase $L "$IMG" -b "$BASE" -F qcow2 ;;
    snapshot) $QM snapshot -l $L "$IMG" ;;
    convert) rm -f "$IMG.convert"; $QM convert $L "$IMG" "$IMG.convert" ;;
    dd) rm -f "$IMG.convert"; $QM dd $L if="$IMG" of="$IMG.convert" bs=512 count=1 ;;
    bench) $QM bench $L -c 1 "$IMG" ;;
    bench-w) $QM bench $L -w -c 1 "$IMG" ;;
    create) $QM create -f qcow2 "$IMG" -b "$BASE" -F qcow2 ;;
    esac
}
