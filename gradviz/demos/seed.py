"""The autograd tutorial's example: Q = 3*a**3 - b**2, and Q.backward(gradient=...) as a
vector-Jacobian product. Afterwards a.grad == 9*a**2 and b.grad == -2*b."""
import gradviz.engine as torch


def main():
    a = torch.tensor([2., 3.], requires_grad=True)
    b = torch.tensor([6., 4.], requires_grad=True)
    Q = 3*a**3 - b**2
    external_grad = torch.tensor([1., 1.])
    Q.backward(gradient=external_grad)
    with torch.no_grad():  # checking the result is no part of the graph
        print("a.grad =", a.grad, " 9*a**2 =", 9*a**2)
        print("b.grad =", b.grad, " -2*b =", -2*b)
    return a, b


if __name__ == "__main__":
    main()
